// Worker thread entry for the embedded run: registers tsx (TypeScript sources, no build step), then starts a worker.
import { register } from 'tsx/esm/api';
register();
await import('./thread-main.ts');
