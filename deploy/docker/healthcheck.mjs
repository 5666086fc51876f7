// Container health check (Dockerfile HEALTHCHECK, compose healthcheck): GET FLEET_HEALTH_URL (default the
// coordinator's http://127.0.0.1:8080/metrics; a worker started with --http sets its own), healthy on 200.
// Plain JavaScript on purpose: it runs every few seconds and should not start the TypeScript loader.
const url = process.env.FLEET_HEALTH_URL || 'http://127.0.0.1:8080/metrics';
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
  await res.body?.cancel();
  if (res.status !== 200) {
    console.error(`unhealthy: GET ${url} answered ${res.status}`);
    process.exit(1);
  }
} catch (e) {
  console.error(`unhealthy: GET ${url}: ${e.cause?.message ?? e.message}`);
  process.exit(1);
}
