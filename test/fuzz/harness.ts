// Fuzz harness: runs mutants in worker threads with a per-case watchdog; a hang or non-typed error fails.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fixture, OCR_CLS, ONNX_TESTS, SILERO } from '../helpers.js';

/** ONNX node tests whose models seed the fuzzer: control flow, recurrences, shape ops, data-dependent sizes. */
const NODE_TESTS = ['test_lstm_defaults', 'test_if', 'test_loop11', 'test_scan9_sum', 'test_conv_with_strides_padding',
  'test_resize_upsample_scales_linear', 'test_gather_0', 'test_layer_normalization_4d_axis0', 'test_sequence_insert_at_back',
  'test_cast_FLOAT_to_FLOAT16', 'test_reduce_sum_keepdims_example', 'test_attention_4d_with_past_and_present', 'test_gru_defaults',
  'test_range_float_type_positive_delta_expanded', 'test_reshape_extended_dims', 'test_expand_dim_changed', 'test_tile',
  'test_constantofshape_int_zeros', 'test_constant_pad', 'test_matmul_2d', 'test_softmax_axis_1', 'test_top_k', 'test_nonzero_example',
  'test_onehot_with_axis', 'test_slice', 'test_concat_3d_axis_1', 'test_split_equal_parts_1d_opset18', 'test_where_example',
  'test_einsum_batch_matmul', 'test_maxpool_2d_pads', 'test_averagepool_2d_strides', 'test_transpose_all_permutations_0',
  'test_cumsum_2d_axis_1', 'test_gathernd_example_int32', 'test_scatter_elements_with_axis', 'test_batchnorm_epsilon',
  'test_gemm_all_attributes', 'test_convtranspose', 'test_instancenorm_example', 'test_argmax_keepdims_example', 'test_squeeze',
  'test_unsqueeze_axis_0', 'test_range_int32_type_negative_delta', 'test_clip', 'test_dequantizelinear', 'test_qlinearmatmul_2D_uint8_float32',
  'test_col2im', 'test_roialign_aligned_false', 'test_nonmaxsuppression_center_point_box_format', 'test_stft', 'test_dft',
  'test_unique_sorted_with_axis', 'test_rnn_seq_length', 'test_compress_0', 'test_depthtospace_example', 'test_gridsample',
  'test_mod_mixed_sign_int64', 'test_reversesequence_batch'];

/** The fuzzer's seed models: real models (Silero VAD, the generated encoder and decoder, the PP-OCR classifier) and node tests. */
export function fuzzCorpus(): string[] {
  // A copy made by bench/fuzz-bundle.sh (numbered in this order) stands in on a machine with no checkout of the rest.
  const dir = process.env.WEBJIT_FUZZ_CORPUS;
  if (dir) return fs.readdirSync(dir).filter((f) => f.endsWith('.onnx')).sort().map((f) => path.join(dir, f));
  const nodeTests = NODE_TESTS.map((t) => path.join(ONNX_TESTS, 'node', t, 'model.onnx')).filter((f) => fs.existsSync(f));
  return [SILERO('silero_vad'), SILERO('silero_vad_op18_ifless'), fixture('encoder-small.onnx'), fixture('decoder-small.onnx'), OCR_CLS, ...nodeTests];
}

export interface FuzzReport {
  cases: number;
  /** Cases that loaded and created a session (and ran, when they had inputs the harness could make). */
  ok: number;
  typed: number;
  /** Cases whose session ran to the end, and cases that threw a typed error during the run. */
  ran: number;
  runTyped: number;
  byBackend: Record<string, number>;
  crashes: { c: number; file: string; kind: string; message: string }[];
  hangs: { c: number; file: string; kind: string }[];
  byKind: Record<string, number>;
  /** Peak resident memory of the process over the run (MiB): bounded allocation means this stays small. */
  peakRssMb: number;
}

const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

export interface FuzzOptions {
  first?: number;
  jobs?: number;
  caseTimeoutMs?: number;
  heapMb?: number;
  /** Backends the cases rotate over (default reference and wasm). */
  backends?: string[];
  /** Run each session that was created (default true), with this per-run time limit. */
  run?: boolean;
  runTimeoutMs?: number;
  /** Self-check of the harness: these case numbers fail on purpose (see the worker). */
  inject?: { crash?: number; reject?: number; hang?: number };
  /** Called every 1,000 cases with the report so far. */
  progress?: (rep: FuzzReport) => void;
}

export async function fuzz(files: string[], cases: number, opts: FuzzOptions = {}): Promise<FuzzReport> {
  const jobs = opts.jobs ?? Math.min(2, os.availableParallelism());
  const first = opts.first ?? 0;
  const rep: FuzzReport = { cases: 0, ok: 0, typed: 0, ran: 0, runTyped: 0, byBackend: {}, crashes: [], hangs: [], byKind: {}, peakRssMb: 0 };
  const data = { files, backends: opts.backends ?? ['reference', 'wasm'], run: opts.run ?? true, runTimeoutMs: opts.runTimeoutMs ?? 5000, inject: opts.inject };
  const per = Math.ceil(cases / jobs);
  const runRange = (start: number, count: number): Promise<void> => new Promise((resolve) => {
    if (count <= 0) { resolve(); return; }
    const w = workerUrl.pathname.endsWith('.ts')
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(workerUrl.href)}); })`,
        { eval: true, workerData: { ...data, first: start, count }, resourceLimits: { maxOldGenerationSizeMb: opts.heapMb ?? 2048 } })
      : new Worker(workerUrl, { workerData: { ...data, first: start, count }, resourceLimits: { maxOldGenerationSizeMb: opts.heapMb ?? 2048 } });
    // The case in flight (announced before the worker mutates the model), and the last one reported done.
    let cur: { c: number; file: string; kind: string } | undefined;
    let lastDone: { c: number; file: string; kind: string } | undefined;
    /** What failed: the case in flight; else the last one done (an error it left behind, counted once already); else the first, at boot. */
    const culprit = (): { c: number; file: string; kind: string; counted: boolean } =>
      cur ? { ...cur, counted: false } : lastDone ? { ...lastDone, counted: true } : { c: start, file: files[start % files.length], kind: '?', counted: false };
    let timer: NodeJS.Timeout | undefined;
    let finished = false;
    const end = () => { if (!finished) { finished = true; clearTimeout(timer); resolve(); } };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        // A case that runs past the watchdog is a hang: record it and go on after it.
        const { counted, ...h } = culprit();
        rep.hangs.push(h);
        if (!counted) rep.cases++;
        const next = h.c + 1;
        finished = true;
        void w.terminate();
        runRange(next, start + count - next).then(resolve);
      }, opts.caseTimeoutMs ?? 20_000);
    };
    w.on('message', (m: { type: string; c: number; file: string; kind: string; outcome: string; stage: string; backend: string; message: string }) => {
      if (m.type === 'start') { cur = { c: m.c, file: m.file, kind: m.kind }; arm(); }
      else if (m.type === 'done') {
        rep.cases++;
        rep.byKind[m.kind] = (rep.byKind[m.kind] ?? 0) + 1;
        rep.byBackend[m.backend] = (rep.byBackend[m.backend] ?? 0) + 1;
        if (m.outcome === 'ok') rep.ok++;
        else if (m.outcome === 'typed') rep.typed++;
        else rep.crashes.push({ ...cur!, message: `${m.stage}: ${m.message}` });
        lastDone = cur;
        cur = undefined;
        if (m.stage === 'ran') rep.ran++;
        else if (m.stage === 'run' && m.outcome === 'typed') rep.runTyped++;
        if (opts.progress && rep.cases % 1000 === 0 && rep.cases < cases) opts.progress(rep);
      } else if (m.type === 'end') end();
    });
    w.on('error', (e) => {
      // Out of memory or an uncaught error in the worker: a crash of the case in flight.
      if (finished) return;
      const { counted, ...dead } = culprit();
      if (!counted) rep.cases++;
      rep.crashes.push({ ...dead, message: `worker died: ${e.stack ?? e.message}` });
      finished = true;
      clearTimeout(timer);
      const next = dead.c + 1;
      runRange(next, start + count - next).then(resolve);
    });
    w.on('exit', () => end());
    arm();
  });
  await Promise.all(Array.from({ length: jobs }, (_, j) => runRange(first + j * per, Math.min(per, cases - j * per))));
  rep.peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
  return rep;
}
