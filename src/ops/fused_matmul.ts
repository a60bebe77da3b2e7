// Reference kernel of webjit.FusedMatMul (made by graph/fuse_matmul.ts): replays the original MatMul, bias Add, activation and residual nodes.
import { registerOp } from './registry.js';

registerOp('FusedMatMul', (inputs, ctx) => ctx.runSubgraph(ctx.attr.graph('graph'), inputs), 'webjit');
