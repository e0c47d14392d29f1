/**
 * A Kubernetes watch (list, then `?watch=1` from its resourceVersion, newline-
 * delimited JSON events) with the control plane's admin credentials, for the lab
 * kubelet and the timeline. Re-lists on a 410 Gone or a dropped stream.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import type { ClientRequest } from 'node:http';
import type { ControlPlane } from '../../e2e/control-plane.ts';

export interface WatchEvent<T> {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  readonly object: T;
}

interface Credentials {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

function adminCredentials(plane: ControlPlane): Credentials {
  const kc = JSON.parse(readFileSync(plane.adminKubeconfig, 'utf8')) as { users: Array<{ user: Record<string, string> }> };
  const user = kc.users[0]!.user;
  return { ca: readFileSync(plane.caFile), cert: readFileSync(user['client-certificate']!), key: readFileSync(user['client-key']!) };
}

export interface Watch {
  stop(): void;
}

/**
 * Watch `path` (a collection URL, query allowed). `onEvent` gets every event in
 * order, the initial list as ADDED. Errors are retried after 500 ms until stop().
 */
export function watch<T extends { metadata: { resourceVersion?: string } }>(plane: ControlPlane, path: string, onEvent: (e: WatchEvent<T>) => void): Watch {
  const creds = adminCredentials(plane);
  let stopped = false;
  let current: ClientRequest | undefined;
  const sep = path.includes('?') ? '&' : '?';

  const list = async (): Promise<string> => {
    const r = await plane.call<{ metadata: { resourceVersion: string }; items: T[] }>('GET', path);
    for (const item of r.items) onEvent({ type: 'ADDED', object: item });
    return r.metadata.resourceVersion;
  };

  const stream = (rv: string): Promise<string | undefined> =>
    new Promise((resolve) => {
      let last: string | undefined = rv;
      const req = request(
        `${plane.server}${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${rv}`,
        { ca: creds.ca, cert: creds.cert, key: creds.key, headers: { Accept: 'application/json' } },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            resolve(undefined);
            return;
          }
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buf += chunk;
            let nl: number;
            while ((nl = buf.indexOf('\n')) !== -1) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (line.trim() === '') continue;
              const event = JSON.parse(line) as WatchEvent<T>;
              if (event.type === 'ERROR') {
                last = undefined; // 410 Gone: re-list
                continue;
              }
              last = event.object.metadata.resourceVersion ?? last;
              if (event.type !== 'BOOKMARK') onEvent(event);
            }
          });
          res.on('end', () => resolve(last));
          res.on('error', () => resolve(last));
        },
      );
      req.on('error', () => resolve(last));
      req.end();
      current = req;
    });

  void (async () => {
    let rv: string | undefined;
    while (!stopped) {
      try {
        rv ??= await list();
        rv = await stream(rv);
      } catch {
        rv = undefined;
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 500));
    }
  })();

  return {
    stop() {
      stopped = true;
      current?.destroy();
    },
  };
}
