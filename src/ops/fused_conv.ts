// Reference kernel of webjit.FusedConv (made by graph/fuse_conv.ts): replays the original Conv and activation nodes.
import { registerOp } from './registry.js';

registerOp('FusedConv', (inputs, ctx) => ctx.runSubgraph(ctx.attr.graph('graph'), inputs), 'webjit');
