// Worker thread entry: registers tsx (TypeScript sources, no build step), then trains one member task.
import { register } from 'tsx/esm/api';
register();
await import('./member-worker-main.ts');
