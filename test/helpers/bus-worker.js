// Worker thread entry for test/bus-transport.test.ts: registers tsx, then runs the TypeScript side.
import { register } from 'tsx/esm/api';
register();
await import('./bus-worker-main.ts');
