// The webjit command line as one bundled file for the GPU machine (bench/gpu/bundle.sh), where there is no npm.
import { main } from '../../src/cli/main.js';

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
  console.error(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
  process.exit(1);
});
