// Reference kernel of FusedElementwise (domain webjit): runs the fused group's original nodes, so results stay exact.
import { registerOp } from './registry.js';

registerOp('FusedElementwise', (inputs, ctx) => ctx.runSubgraph(ctx.attr.graph('graph'), inputs), 'webjit');
