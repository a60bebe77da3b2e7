// Development entry point: `npx tsx src/cli/dev.ts <args>` runs the CLI from source without a build.
import { main } from './main.js';
process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); throw e; });
main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e) => { console.error(e); process.exitCode = 1; });
