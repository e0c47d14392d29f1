/** The real `serve` process: SIGTERM → not ready, in-flight requests answered, exit 0. */
import t from 'tap';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { httpsRequest, makeCerts, REPO_ROOT } from '../support/webhook.ts';

const MAIN = join(REPO_ROOT, 'src/cli/main.ts');

interface Served {
  readonly child: ChildProcess;
  readonly port: number;
  readonly ca: Buffer;
  readonly exit: Promise<{ code: number | null; signal: string | null }>;
  readonly output: () => string;
}

async function serve(extra: string[]): Promise<Served> {
  const certs = makeCerts();
  const child = spawn(process.execPath, [MAIN, 'serve', '--port', '0', '--metrics-port', '0', '--bind-address', '127.0.0.1', '--tls-cert-file', certs.certFile, '--tls-private-key-file', certs.keyFile, '--conntrack-proc-dir', '/nonexistent', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => {
    certs.remove();
    resolve({ code, signal });
  }));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start within 10 s:\n${out}`)), 10_000);
    const check = () => {
      const m = /"port":(\d+),"metricsPort"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', check);
  });
  return { child, port, ca: certs.ca, exit, output: () => out };
}

t.test('SIGTERM: not ready at once, in-flight request answered, exit 0', async (t) => {
  const s = await serve(['--shutdown-delay', '2']);
  t.teardown(() => s.child.kill('SIGKILL'));
  const base = `https://127.0.0.1:${s.port}`;
  // Start a request and send only half of its body.
  const body = Buffer.from(JSON.stringify(reviewOf(defaultedPod())));
  const socket = connect({ host: '127.0.0.1', port: s.port, rejectUnauthorized: false });
  await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
  let response = '';
  socket.on('data', (d: Buffer) => (response += d.toString()));
  const answered = new Promise<void>((resolve) => socket.on('end', () => resolve()));
  socket.write(`POST /mutate?timeout=10s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
  socket.write(body.subarray(0, 100));

  const sentAt = Date.now();
  s.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  const ready = await httpsRequest(`${base}/readyz`, { method: 'GET', ca: s.ca }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
  if (ready instanceof Error) t.fail(`readyz during the delay: ${ready.message}`);
  else {
    t.equal(ready.status, 503, 'not ready during the shutdown delay');
    t.match(ready.text, /shutting down/);
    t.equal(ready.headers.connection, 'close', 'clients are told to move on');
  }
  socket.write(body.subarray(100));
  await answered;
  t.match(response, /^HTTP\/1\.1 200 OK/, 'the in-flight request got its answer');
  t.match(response, /"allowed":true/);
  const { code } = await s.exit;
  t.equal(code, 0, 'exit 0');
  const took = Date.now() - sentAt;
  t.ok(took >= 2000 && took < 8000, `exited after the 2 s delay (${took} ms)`);
  t.match(s.output(), /webhook stopped/);
});

t.test('SIGINT skips the delay', async (t) => {
  const s = await serve(['--shutdown-delay', '30']);
  t.teardown(() => s.child.kill('SIGKILL'));
  const start = Date.now();
  s.child.kill('SIGINT');
  const { code } = await s.exit;
  t.equal(code, 0);
  t.ok(Date.now() - start < 5000, 'quick exit');
});
