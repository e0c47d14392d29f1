import t from 'tap';
import { ApiException } from '@kubernetes/client-node';
import { backoffDelay, describeApiError, statusOf } from '../../src/cluster/api.ts';
import { versionOf } from '../../src/cluster/server-version.ts';

t.test('errors are one short line naming the status or the network problem', async (t) => {
  const forbidden = new ApiException(403, 'Unknown API Status Code!', JSON.stringify({ kind: 'Status', message: 'nodes "n1" is forbidden: User "system:serviceaccount:x:y" cannot patch resource "nodes"', code: 403 }), {});
  t.equal(describeApiError(forbidden), 'HTTP 403: nodes "n1" is forbidden: User "system:serviceaccount:x:y" cannot patch resource "nodes"');
  t.equal(statusOf(forbidden), 403);
  t.equal(describeApiError(new ApiException(502, 'x', '<html>bad gateway</html>', {})), 'HTTP 502: <html>bad gateway</html>');
  t.equal(describeApiError(new ApiException(401, 'Unauthorized', undefined, {})), 'HTTP 401');
  const refused = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6443'), { code: 'ECONNREFUSED' }) });
  t.equal(describeApiError(refused), 'connect ECONNREFUSED 127.0.0.1:6443 (ECONNREFUSED)');
  t.equal(describeApiError(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), 'timed out');
  t.equal(describeApiError(Object.assign(new Error('Gone'), { statusCode: 410 })), 'HTTP 410: Gone');
  t.equal(statusOf(Object.assign(new Error('Gone'), { statusCode: 410 })), 410);
  t.ok(describeApiError(new Error('x'.repeat(1000))).length <= 300);
});

t.test('backoff doubles from the initial delay up to the cap, with ±20% jitter', async (t) => {
  const mid = () => 0.5;
  t.same([1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(n, 1000, 30_000, mid)), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  t.equal(backoffDelay(1, 1000, 30_000, () => 0), 800);
  t.equal(backoffDelay(1, 1000, 30_000, () => 1), 1200);
  t.equal(backoffDelay(1000, 1000, 30_000, mid), 30_000, 'no overflow');
});

t.test('the server version from gitVersion, else major/minor as providers write them', async (t) => {
  t.same(versionOf({ gitVersion: 'v1.30.2', major: '1', minor: '30' }), { major: 1, minor: 30 });
  t.same(versionOf({ gitVersion: 'v1.29.8-eks-a737599', major: '1', minor: '29+' }), { major: 1, minor: 29 });
  t.same(versionOf({ gitVersion: 'custom', major: '1', minor: '31+' }), { major: 1, minor: 31 });
  t.equal(versionOf({ gitVersion: 'custom', major: '', minor: '' }), undefined);
});
