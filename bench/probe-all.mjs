// Runs bench/probe.mjs on every model scripts/make_probe_models.py makes (kinds webjit is measured on without being
// named): webjit wasm against onnxruntime-web wasm and onnxruntime-node, 2 threads each, outputs checked.
//   /usr/bin/python3 scripts/make_probe_models.py && npm run build && node bench/probe-all.mjs [RUNS] [FILTER]
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const MODELS = [
  ['resnet', '1,3,224,224'], ['mobilenet', '1,3,224,224'], ['vit', '1,3,224,224'], ['unet', '1,3,128,128'],
  ['kws', '1,40,400'], ['tenc', '1,100,80'], ['lstm', '1,100,40'], ['gru', '1,100,64'], ['bigru', '4,60,96'],
];
const [runs = '30', filter = '.'] = process.argv.slice(2);
for (const [name, dims] of MODELS.filter(([n]) => new RegExp(filter).test(n))) {
  const out = execFileSync(process.execPath, [path.join(here, 'probe.mjs'), path.join(here, 'probe-models', `${name}.onnx`), dims, runs], { encoding: 'utf8' });
  process.stdout.write(out.replace(`${path.join(here, 'probe-models')}/`, ''));
}
