/**
 * The scenarios both drain examples (examples/go-drain, examples/node-drain) must
 * pass, as real processes: a server that drains on SIGTERM within its budget, and
 * a client that retries idempotent calls through a restart with a new UDP socket
 * per lookup.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import type { Test } from 'tap';

export interface Runtime {
  /** The command line of the server listening on `addr` with a budget in seconds. */
  readonly server: (addr: string, budgetSeconds: number) => readonly [string, string[]];
  /** The command line of the client calling `hostPort`. */
  readonly client: (hostPort: string, calls: number, attempts: number) => readonly [string, string[]];
  readonly cwd: string;
}

interface Server {
  readonly child: ChildProcess;
  readonly hostPort: string;
  readonly port: number;
  stderr(): string;
  readonly exited: Promise<{ code: number | null; at: number }>;
}

function startServer(rt: Runtime, addr: string, budgetSeconds: number): Promise<Server> {
  const [cmd, args] = rt.server(addr, budgetSeconds);
  const child = spawn(cmd, args, { cwd: rt.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start in 30s: ${stderr}`));
    }, 30_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const m = /^listening (\S+):(\d+)$/m.exec(stdout);
      if (m === null) return;
      clearTimeout(timer);
      resolve({ child, hostPort: `${m[1]}:${m[2]}`, port: Number(m[2]), stderr: () => stderr, exited });
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${stderr}`));
    });
  });
}

interface Answer {
  readonly status: number | undefined;
  readonly body: string;
  readonly error: string | undefined;
}

function get(url: string, agent: http.Agent | false = false): Promise<Answer> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body, error: undefined }));
      res.on('error', (e) => resolve({ status: res.statusCode, body, error: e.message }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: undefined, body: '', error: e.code ?? e.message }));
  });
}

/** Whether a new TCP connection is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function drainTests(t: Test, rt: Runtime): void {
  t.test('SIGTERM mid-traffic: in-flight requests finish, idle keep-alive connections close, new connections are refused, exit 0 within the budget', async (t) => {
    const s = await startServer(rt, '127.0.0.1:0', 5);
    t.teardown(() => void s.child.kill('SIGKILL'));
    const base = `http://${s.hostPort}`;
    // An idle keep-alive connection (one quick request on it) and three slow requests in flight.
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => keepAlive.destroy());
    t.match(await get(`${base}/healthz`, keepAlive), { status: 200 });
    const idle = Object.values(keepAlive.freeSockets).flat()[0];
    t.ok(idle, 'a keep-alive connection is idle in the pool');
    const idleClosed = new Promise<number>((resolve) => idle?.once('close', () => resolve(Date.now())));
    const inFlight = [1, 2, 3].map(() => get(`${base}/work?ms=1500`));
    await sleep(300);
    const termAt = Date.now();
    s.child.kill('SIGTERM');
    let refusedAt: number | undefined;
    for (let i = 0; i < 50 && refusedAt === undefined; i++) {
      if (await refused(s.port)) refusedAt = Date.now();
      else await sleep(20);
    }
    t.ok(refusedAt !== undefined && refusedAt - termAt < 1000, `a new connection is refused ${refusedAt === undefined ? 'never' : `${refusedAt - termAt} ms`} after SIGTERM`);
    const answers = await Promise.all(inFlight);
    const doneAt = Date.now();
    t.same(answers.map((a) => [a.status, a.body.trim(), a.error]), [[200, 'done', undefined], [200, 'done', undefined], [200, 'done', undefined]], 'the requests in flight at SIGTERM all finish');
    t.ok(refusedAt !== undefined && refusedAt < doneAt, 'refused while they were still being served');
    t.ok((await idleClosed) - termAt < 1000, 'the idle keep-alive connection is closed by the server soon after SIGTERM');
    const exit = await s.exited;
    t.equal(exit.code, 0, s.stderr());
    t.ok(exit.at - termAt < 5000, `exit ${exit.at - termAt} ms after SIGTERM, within the 5 s budget`);
    t.match(s.stderr(), /SIGTERM: draining 3 requests[\s\S]*drained/);
  });

  t.test('past the shutdown budget what is left is cut and the server exits 1, not waiting for SIGKILL', async (t) => {
    const s = await startServer(rt, '127.0.0.1:0', 1);
    t.teardown(() => void s.child.kill('SIGKILL'));
    const slow = get(`http://${s.hostPort}/work?ms=20000`);
    await sleep(300);
    const termAt = Date.now();
    s.child.kill('SIGTERM');
    const exit = await s.exited;
    t.equal(exit.code, 1);
    t.ok(exit.at - termAt >= 900 && exit.at - termAt < 4000, `exit ${exit.at - termAt} ms after SIGTERM (budget 1 s)`);
    const a = await slow;
    t.not(a.body.trim(), 'done', `the request past the budget is cut (${a.error ?? a.status})`);
    t.match(s.stderr(), /shutdown budget 1s exceeded: cutting 1 requests/);
  });

  t.test('the client rides out a restart: idempotent calls retried with backoff, a new UDP socket per lookup', async (t) => {
    const first = await startServer(rt, '127.0.0.1:0', 5);
    t.teardown(() => void first.child.kill('SIGKILL'));
    const [cmd, args] = rt.client(first.hostPort, 30, 8);
    const client = spawn(cmd, args, { cwd: rt.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => void client.kill('SIGKILL'));
    let out = '';
    let err = '';
    client.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    client.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const clientExit = new Promise<number | null>((resolve) => client.on('exit', (code) => resolve(code)));
    // Let some calls through, then stop the server; a new one takes its port a moment later.
    while (out.split('\n').length < 6) await sleep(20);
    first.child.kill('SIGTERM');
    t.equal((await first.exited).code, 0);
    await sleep(150);
    const second = await startServer(rt, first.hostPort, 5);
    t.teardown(() => void second.child.kill('SIGKILL'));
    t.equal(await clientExit, 0, `client: ${err}`);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; ok: boolean; attempts: number; localPort?: number });
    const httpCalls = lines.filter((l) => l.kind === 'http');
    const udp = lines.filter((l) => l.kind === 'udp');
    t.equal(httpCalls.length, 30);
    t.equal(udp.length, 30);
    t.ok(lines.every((l) => l.ok), 'every call succeeded in the end');
    t.ok(lines.some((l) => l.attempts > 1), `calls during the gap were retried (most attempts: ${Math.max(...lines.map((l) => l.attempts))})`);
    t.equal(new Set(udp.map((l) => l.localPort)).size, 30, 'each UDP lookup came from a socket (source port) of its own');
    second.child.kill('SIGTERM');
    t.equal((await second.exited).code, 0);
  });
}
