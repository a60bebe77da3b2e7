// Static server for the built demo (demo/dist) with the headers that make the page cross-origin isolated
// (COOP/COEP: SharedArrayBuffer, hence Wasm threads). `node demo/serve.mjs [--port N] [--host H] [--no-isolation]`.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.onnx': 'application/octet-stream', '.png': 'image/png', '.txt': 'text/plain; charset=utf-8',
  '.json': 'application/json', '.svg': 'image/svg+xml', '.map': 'application/json',
};

/**
 * Serves `root` on host:port (port 0: an ephemeral one). With `isolate` (the default) every response carries
 * Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp. Resolves to
 * { url, close() } once listening.
 */
export function serveDemo({ root = path.join(here, 'dist'), host = '127.0.0.1', port = 0, isolate = true } = {}) {
  if (!fs.existsSync(path.join(root, 'index.html'))) {
    throw new Error(`${root}/index.html is missing: build the demo first (npm run demo:build)`);
  }
  const server = http.createServer((req, res) => {
    const headers = { 'Cache-Control': 'no-cache', 'Cross-Origin-Resource-Policy': 'same-origin' };
    if (isolate) {
      headers['Cross-Origin-Opener-Policy'] = 'same-origin';
      headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
    }
    let rel;
    try {
      rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      res.writeHead(400, headers).end('bad request');
      return;
    }
    if (rel.endsWith('/')) rel += 'index.html';
    const file = path.join(root, path.normalize(rel));
    if (path.relative(root, file).startsWith('..') || req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(403, headers).end('forbidden');
      return;
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end(`not found: ${rel}`);
        return;
      }
      res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Content-Length': st.size });
      if (req.method === 'HEAD') res.end();
      else fs.createReadStream(file).pipe(res);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      const shown = host.includes(':') ? `[${host}]` : host;
      resolve({
        url: `http://${shown}:${a.port}/`,
        server,
        close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
      });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  const host = arg('--host', 'localhost');
  const isolate = !process.argv.includes('--no-isolation');
  const { url } = await serveDemo({ host, port: Number(arg('--port', process.env.PORT ?? 5173)), isolate });
  console.log(`webjit demo: ${url}${isolate ? '  (COOP/COEP set: cross-origin isolated, Wasm threads)' : '  (no COOP/COEP: one Wasm thread)'}`);
  console.log('Ctrl-C stops it.');
}
