#!/usr/bin/env node
// Entry point of the webjit command line: runs the compiled CLI.
import { main } from '../dist/src/cli/main.js';
// A closed pipe (webjit info model | head) ends the output quietly.
process.stdout.on('error', (e) => { if (e.code === 'EPIPE') process.exit(0); throw e; });
main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => {
  console.error(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
  process.exitCode = 1;
});
