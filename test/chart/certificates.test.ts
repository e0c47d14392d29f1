/**
 * The three certificate modes, each wiring the webhook configuration's caBundle, and
 * conflicting options failing the render. Generate mode's `lookup` (keep the CA across
 * upgrades) is tested against a small in-test API server speaking the Kubernetes
 * discovery and GET protocol to the real helm (`helm template --dry-run=server`).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { parse } from 'yaml';
import { ciModes, NAMESPACE, ofKind, one, parseObjects, podSpecOf, render, template } from './render.ts';
import type { K8sObject } from './render.ts';

const modes = ciModes();
const SERVICE_DNS = ['safe-termination', 'safe-termination.safe-termination', 'safe-termination.safe-termination.svc', 'safe-termination.safe-termination.svc.cluster.local'];
const b64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');

function webhookOf(objects: K8sObject[]): any {
  return one(objects, 'MutatingWebhookConfiguration').webhooks[0];
}

function sans(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, ''));
}

t.test('generate mode: a CA and a serving certificate, and the caBundle is that CA', async (t) => {
  const objects = await render();
  const secret = one(objects, 'Secret');
  t.equal(secret.type, 'kubernetes.io/tls');
  t.equal(secret.metadata.name, 'safe-termination-tls');
  t.same(Object.keys(secret.data).sort(), ['ca.crt', 'tls.crt', 'tls.key']);
  const caPem = b64(secret.data['ca.crt']);
  const w = webhookOf(objects);
  t.ok(w.clientConfig.caBundle, 'caBundle is present');
  t.equal(b64(w.clientConfig.caBundle), caPem, 'caBundle is the CA of the Secret');
  const ca = new X509Certificate(caPem);
  const cert = new X509Certificate(b64(secret.data['tls.crt']));
  t.ok(ca.ca, 'the CA is a CA');
  t.ok(cert.verify(ca.publicKey), 'the serving certificate is signed by the CA');
  t.ok(cert.checkIssued(ca));
  t.ok(cert.checkPrivateKey(createPrivateKey(b64(secret.data['tls.key']))), 'tls.key is the certificate key');
  t.same(sans(cert).sort(), [...SERVICE_DNS].sort(), 'valid for the Service DNS names');
  t.equal(cert.checkHost('safe-termination.safe-termination.svc'), 'safe-termination.safe-termination.svc', 'the name the API server calls');
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  t.ok(days > 364 && days <= 366, `valid for a year (${days.toFixed(0)} days)`);
  for (const [what, c] of [['the CA', ca], ['the serving certificate', cert]] as const) {
    t.equal(c.publicKey.asymmetricKeyType, 'ec', `${what}: an ECDSA key`);
    t.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', `${what}: on P-256`);
  }
  const notAfter = Date.parse(secret.metadata.annotations?.['safe-termination.io/certificate-not-after'] ?? '');
  t.ok(Math.abs(notAfter - Date.parse(cert.validTo)) < 120_000, 'the Secret records the expiry, for renewal on upgrade');
  t.equal(podSpecOf(one(objects, 'Deployment')).volumes.find((v: { name: string }) => v.name === 'tls').secret.secretName, secret.metadata.name, 'the webhook mounts it');
  t.equal(podSpecOf(one(objects, 'Deployment')).volumes.find((v: { name: string }) => v.name === 'tls').secret.defaultMode, 0o400, 'the key mounted owner-read only (group read for the fsGroup)');
  t.notOk(one(objects, 'MutatingWebhookConfiguration').metadata.annotations?.['cert-manager.io/inject-ca-from']);

  const short = one(await render({ set: ['certificates.generate.validityDays=30'] }), 'Secret');
  const shortDays = (Date.parse(new X509Certificate(b64(short.data['tls.crt'])).validTo) - Date.now()) / 86_400_000;
  t.ok(shortDays > 29 && shortDays <= 31, 'validityDays sets the lifetime');

  const again = one(await render({ fresh: true }), 'Secret');
  t.not(again.data['ca.crt'], secret.data['ca.crt'], 'without cluster access every render makes a new CA (the README says so)');
});

/** A minimal Kubernetes API: /version, discovery, and GET of the objects given. */
async function fakeApiServer(objects: Record<string, unknown>): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const R = (name: string, kind: string, namespaced = true) => ({ name, singularName: kind.toLowerCase(), namespaced, kind, verbs: ['get', 'list', 'create', 'update', 'patch', 'delete'] });
  const groups: Record<string, unknown[]> = {
    v1: [R('secrets', 'Secret'), R('services', 'Service'), R('serviceaccounts', 'ServiceAccount'), R('configmaps', 'ConfigMap'), R('namespaces', 'Namespace', false)],
    'apps/v1': [R('deployments', 'Deployment'), R('daemonsets', 'DaemonSet')],
    'policy/v1': [R('poddisruptionbudgets', 'PodDisruptionBudget')],
    'networking.k8s.io/v1': [R('networkpolicies', 'NetworkPolicy')],
    'rbac.authorization.k8s.io/v1': [R('clusterroles', 'ClusterRole', false), R('clusterrolebindings', 'ClusterRoleBinding', false), R('roles', 'Role'), R('rolebindings', 'RoleBinding')],
    'admissionregistration.k8s.io/v1': [
      R('mutatingwebhookconfigurations', 'MutatingWebhookConfiguration', false),
      R('validatingadmissionpolicies', 'ValidatingAdmissionPolicy', false),
      R('validatingadmissionpolicybindings', 'ValidatingAdmissionPolicyBinding', false),
    ],
  };
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]!;
    requests.push(`${req.method} ${path}`);
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET') return send(405, { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 405, reason: 'MethodNotAllowed' });
    if (path === '/version') return send(200, { major: '1', minor: '33', gitVersion: 'v1.33.0', platform: 'linux/amd64' });
    if (path === '/api') return send(200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] });
    if (path === '/apis') {
      const list = Object.keys(groups)
        .filter((gv) => gv.includes('/'))
        .map((gv) => {
          const [name, version] = gv.split('/');
          return { name, versions: [{ groupVersion: gv, version }], preferredVersion: { groupVersion: gv, version } };
        });
      return send(200, { kind: 'APIGroupList', apiVersion: 'v1', groups: list });
    }
    const gv = path === '/api/v1' ? 'v1' : /^\/apis\/[^/]+\/[^/]+$/.test(path) ? path.slice(6) : undefined;
    if (gv !== undefined && groups[gv] !== undefined) return send(200, { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv, resources: groups[gv] });
    const found = objects[path];
    if (found !== undefined) return send(200, found);
    return send(404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 404, reason: 'NotFound', message: `${path} not found` });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** `helm template --dry-run=server` against the fake API server holding `objects`. */
async function renderAgainst(t: Test, objects: Record<string, unknown>, set: readonly string[] = []): Promise<{ objects: K8sObject[]; requests: string[] }> {
  const api = await fakeApiServer(objects);
  const dir = mkdtempSync(join(tmpdir(), 'st-kubeconfig-'));
  t.teardown(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const kubeconfig = join(dir, 'config');
  writeFileSync(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "${api.url}"}}]
users: [{name: test, user: {token: test-token}}]
contexts: [{name: fake, context: {cluster: fake, user: test, namespace: ${NAMESPACE}}}]
current-context: fake
`,
  );
  const r = await template({ extraArgs: ['--dry-run=server', '--disable-openapi-validation', ...set.flatMap((v) => ['--set', v])], helm: { kubeconfig, timeoutMs: 30_000 } });
  if (r.status !== 0) throw new Error(`helm template --dry-run=server failed: ${r.stderr}`);
  return { objects: parseObjects(r.stdout), requests: api.requests };
}

function previousSecret(data: Record<string, string>, annotations: Record<string, string> = {}): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/tls',
    metadata: {
      name: 'safe-termination-tls',
      namespace: NAMESPACE,
      labels: { 'app.kubernetes.io/managed-by': 'Helm' },
      annotations: { 'meta.helm.sh/release-name': 'safe-termination', 'meta.helm.sh/release-namespace': NAMESPACE, ...annotations },
    },
    data,
  };
}

t.test('generate mode keeps the CA and certificate of the previous release (lookup)', async (t) => {
  const before = one(await render(), 'Secret');
  const secretPath = `/api/v1/namespaces/${NAMESPACE}/secrets/safe-termination-tls`;
  const { objects, requests } = await renderAgainst(t, { [secretPath]: previousSecret(before.data) });
  t.ok(requests.includes(`GET ${secretPath}`), 'helm looked the Secret up');
  const after = one(objects, 'Secret');
  t.same(after.data, before.data, 'the same CA, certificate and key');
  t.equal(webhookOf(objects).clientConfig.caBundle, before.data['ca.crt'], 'and the caBundle is still that CA');
});

t.test('helm upgrade renews the pair within renewBeforeDays of its expiry; the caBundle trusts both CAs meanwhile', async (t) => {
  const before = one(await render(), 'Secret');
  const secretPath = `/api/v1/namespaces/${NAMESPACE}/secrets/safe-termination-tls`;
  const inDays = (d: number): string => new Date(Date.now() + d * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z');
  const notAfterKey = 'safe-termination.io/certificate-not-after';

  const near = await renderAgainst(t, { [secretPath]: previousSecret(before.data, { [notAfterKey]: inDays(10) }) });
  const renewed = one(near.objects, 'Secret');
  t.not(renewed.data['tls.crt'], before.data['tls.crt'], '10 days left: a new certificate');
  t.not(renewed.data['ca.crt'], before.data['ca.crt'], 'and a new CA');
  t.equal(b64(webhookOf(near.objects).clientConfig.caBundle), b64(renewed.data['ca.crt']) + b64(before.data['ca.crt']), 'the caBundle holds the new CA and the old one');
  const days = (Date.parse(renewed.metadata.annotations?.[notAfterKey] ?? '') - Date.now()) / 86_400_000;
  t.ok(days > 364, `the new expiry is recorded (${days.toFixed(0)} days)`);

  const far = await renderAgainst(t, { [secretPath]: previousSecret(before.data, { [notAfterKey]: inDays(40) }) });
  t.same(one(far.objects, 'Secret').data, before.data, '40 days left: kept');
  t.equal(webhookOf(far.objects).clientConfig.caBundle, before.data['ca.crt'], 'with its CA alone');

  const sooner = await renderAgainst(t, { [secretPath]: previousSecret(before.data, { [notAfterKey]: inDays(40) }) }, ['certificates.generate.renewBeforeDays=60']);
  t.not(one(sooner.objects, 'Secret').data['tls.crt'], before.data['tls.crt'], 'renewBeforeDays=60: 40 days left is renewed');
});

t.test('generate mode makes a new CA when the previous Secret is incomplete or absent', async (t) => {
  const before = one(await render(), 'Secret');
  const secretPath = `/api/v1/namespaces/${NAMESPACE}/secrets/safe-termination-tls`;
  const partial = { 'tls.crt': before.data['tls.crt'], 'tls.key': before.data['tls.key'] };
  const { objects } = await renderAgainst(t, { [secretPath]: previousSecret(partial) });
  const after = one(objects, 'Secret');
  t.not(after.data['ca.crt'], before.data['ca.crt']);
  t.equal(webhookOf(objects).clientConfig.caBundle, after.data['ca.crt'], 'the caBundle is the new CA');
  const fresh = await renderAgainst(t, {});
  t.equal(webhookOf(fresh.objects).clientConfig.caBundle, one(fresh.objects, 'Secret').data['ca.crt'], 'first install: a new CA, wired in');
});

t.test('cert-manager mode: a CA chain, a Certificate, and the cainjector annotation', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('cert-manager')!] });
  t.equal(ofKind(objects, 'Secret').length, 0, 'no Secret from Helm');
  const mwc = one(objects, 'MutatingWebhookConfiguration');
  t.equal(mwc.metadata.annotations?.['cert-manager.io/inject-ca-from'], `${NAMESPACE}/safe-termination-tls`);
  t.notOk(mwc.webhooks[0].clientConfig.caBundle, 'cainjector fills the caBundle');
  const serving = one(objects, 'Certificate', 'safe-termination-tls');
  t.equal(serving.apiVersion, 'cert-manager.io/v1');
  t.equal(serving.metadata.namespace, NAMESPACE, 'the Certificate named by the annotation exists in that namespace');
  t.same(serving.spec.dnsNames, SERVICE_DNS);
  t.equal(serving.spec.secretName, 'safe-termination-tls');
  t.equal(podSpecOf(one(objects, 'Deployment')).volumes.find((v: { name: string }) => v.name === 'tls').secret.secretName, serving.spec.secretName, 'the webhook mounts its Secret');
  t.same(serving.spec.usages, ['digital signature', 'server auth']);
  t.equal(serving.spec.duration, '2160h');
  t.equal(serving.spec.renewBefore, '360h');
  t.same(serving.spec.issuerRef, { name: 'safe-termination-ca', kind: 'Issuer', group: 'cert-manager.io' });
  const caIssuer = one(objects, 'Issuer', 'safe-termination-ca');
  const ca = one(objects, 'Certificate', 'safe-termination-ca');
  t.equal(caIssuer.spec.ca.secretName, ca.spec.secretName, 'the CA Issuer signs with the CA Certificate');
  t.equal(ca.spec.isCA, true);
  t.same(ca.spec.issuerRef, { name: 'safe-termination-selfsigned', kind: 'Issuer', group: 'cert-manager.io' });
  t.same(one(objects, 'Issuer', 'safe-termination-selfsigned').spec, { selfSigned: {} });
});

t.test('cert-manager mode with an existing issuer', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('cert-manager-issuer')!] });
  t.equal(ofKind(objects, 'Issuer').length, 0, 'no Issuer of its own');
  const serving = one(objects, 'Certificate');
  t.same(serving.spec.issuerRef, { name: 'internal-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' });
  t.equal(serving.spec.duration, '720h');
  t.equal(one(objects, 'MutatingWebhookConfiguration').metadata.annotations?.['cert-manager.io/inject-ca-from'], `${NAMESPACE}/${serving.metadata.name}`);
});

t.test('existingSecret mode: the given Secret and the given CA', async (t) => {
  const file = modes.get('existing-secret')!;
  const given = (parse(readFileSync(file, 'utf8')) as { certificates: { caBundle: string; existingSecret: string } }).certificates;
  const objects = await render({ valuesFiles: [file] });
  t.equal(ofKind(objects, 'Secret').length, 0, 'no Secret from Helm');
  t.equal(b64(webhookOf(objects).clientConfig.caBundle).trim(), given.caBundle.trim(), 'caBundle is the given CA');
  const tls = podSpecOf(one(objects, 'Deployment')).volumes.find((v: { name: string }) => v.name === 'tls');
  t.equal(tls.secret.secretName, given.existingSecret);
  t.same(tls.secret.items.map((i: { key: string }) => i.key), ['tls.crt', 'tls.key'], 'only the certificate and key are mounted');
  t.ok(new X509Certificate(given.caBundle).ca);

  const asBase64 = await render({ set: [`certificates.existingSecret=mine`, `certificates.caBundle=${Buffer.from(given.caBundle).toString('base64')}`] });
  t.equal(b64(webhookOf(asBase64).clientConfig.caBundle).trim(), given.caBundle.trim(), 'a base64 caBundle is accepted as is');

  const bad = await template({ set: ['certificates.existingSecret=mine', 'certificates.caBundle=bm90IGEgY2VydA=='] });
  t.not(bad.status, 0);
  t.match(bad.stderr, /certificates\.caBundle must be a PEM certificate/);
});

t.test('conflicting or incomplete certificate options fail the render with what to change', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['certificates.certManager.enabled=true', 'certificates.existingSecret=mine', 'certificates.caBundle=x'], /certManager\.enabled=true and existingSecret="mine" are two certificate modes; choose one/],
    [['certificates.existingSecret=mine'], /certificates\.existingSecret="mine" needs certificates\.caBundle/],
    [['certificates.caBundle=x'], /certificates\.caBundle is only used with certificates\.existingSecret/],
    [['certificates.certManager.issuerRef.name=ca'], /issuerRef is set but certificates\.certManager\.enabled is false/],
  ];
  for (const [set, message] of cases) {
    const r = await template({ set });
    t.not(r.status, 0, set.join(' '));
    t.match(r.stderr, message);
    t.equal(r.stdout, '', 'nothing rendered');
  }
});
