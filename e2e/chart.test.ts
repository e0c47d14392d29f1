/**
 * The chart against a real API server (§7, §9): for every ci/*-values.yaml, a real
 * `helm install` into a namespace of its own, every object of the release read back
 * through the API, `helm upgrade` with the same values (the generated certificate is
 * kept), `helm uninstall`, and every object gone, cluster-scoped ones included.
 * Values the schema refuses never reach the cluster.
 *
 * There is no kubelet: nothing becomes Ready, so helm does not wait for readiness.
 * The CRD modes (cert-manager, monitoring) run against pinned CRDs (e2e/crds.ts),
 * with no cert-manager or Prometheus Operator controller behind them.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { runHelmAsync } from '../scripts/helm.ts';
import { ciModes } from '../test/chart/render.ts';
import type { K8sObject } from '../test/chart/render.ts';
import { controlPlaneSkipReason, startControlPlane } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';
import { CRD_SETS, crdSkipReason, installCrds } from './crds.ts';
import type { CrdSet } from './crds.ts';
import { CHART, helm, REPO_ROOT, waitFor } from './on-host.ts';

/** helm must not wait for readiness: without a kubelet nothing gets Ready. */
const NO_WAIT = '--wait=hookOnly';
const NODE = 'e2e-node-1';
const INSTANCE = 'app.kubernetes.io/instance';

type Values = {
  certificates?: { certManager?: { enabled?: boolean }; existingSecret?: string; caBundle?: string };
};

function manifestObjects(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .filter((d) => d.contents !== null)
    .map((d) => d.toJS() as K8sObject)
    .filter((o) => o !== null && typeof o === 'object' && typeof o.kind === 'string');
}

const describe = (o: K8sObject): string => `${o.kind} ${o.metadata.namespace === undefined ? '' : `${o.metadata.namespace}/`}${o.metadata.name}`;

/** Maps an object's apiVersion and kind to its URL, from the API server's own discovery. */
class Resources {
  private readonly groups = new Map<string, Array<{ name: string; kind: string; namespaced: boolean }>>();
  private readonly plane: ControlPlane;
  constructor(plane: ControlPlane) {
    this.plane = plane;
  }

  async path(o: K8sObject, releaseNamespace: string): Promise<{ path: string; namespaced: boolean }> {
    const base = o.apiVersion.includes('/') ? `/apis/${o.apiVersion}` : `/api/${o.apiVersion}`;
    let resources = this.groups.get(base);
    if (resources === undefined) {
      resources = (await this.plane.call<{ resources: Array<{ name: string; kind: string; namespaced: boolean }> }>('GET', base)).resources;
      this.groups.set(base, resources);
    }
    const resource = resources.find((r) => r.kind === o.kind && !r.name.includes('/'));
    if (resource === undefined) throw new Error(`${base} serves no ${o.kind}`);
    const namespace = o.metadata.namespace ?? releaseNamespace;
    return {
      path: resource.namespaced ? `${base}/namespaces/${namespace}/${resource.name}/${o.metadata.name}` : `${base}/${resource.name}/${o.metadata.name}`,
      namespaced: resource.namespaced,
    };
  }
}

/** List URLs (all namespaces) where a release's objects could be left behind, by label. */
const SWEEP = [
  '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations',
  '/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations',
  '/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies',
  '/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings',
  '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
  '/apis/rbac.authorization.k8s.io/v1/roles',
  '/apis/rbac.authorization.k8s.io/v1/rolebindings',
  '/api/v1/secrets',
  '/api/v1/services',
  '/api/v1/serviceaccounts',
  '/apis/apps/v1/deployments',
  '/apis/apps/v1/daemonsets',
];

async function labelled(plane: ControlPlane, selector: string): Promise<string[]> {
  const found: string[] = [];
  for (const url of SWEEP) {
    const list = await plane.call<{ items: K8sObject[] }>('GET', `${url}?labelSelector=${encodeURIComponent(selector)}`);
    for (const item of list.items) found.push(`${url.split('/').pop()!} ${item.metadata.namespace ?? ''}/${item.metadata.name}`);
  }
  return found;
}

async function secretData(plane: ControlPlane, namespace: string, name: string): Promise<Record<string, string>> {
  return (await plane.call<{ data?: Record<string, string> }>('GET', `/api/v1/namespaces/${namespace}/secrets/${name}`)).data ?? {};
}

/** The API groups of the objects the chart renders with these values (no cluster needed). */
async function renderedGroups(valuesFile: string): Promise<Set<string>> {
  const r = await runHelmAsync(['template', 'probe', CHART, '-n', 'probe', '-f', valuesFile]);
  if (r.status !== 0) throw new Error(`helm template -f ${valuesFile} failed: ${r.stderr}`);
  return new Set(manifestObjects(r.stdout).map((o) => (o.apiVersion.includes('/') ? o.apiVersion.split('/')[0]! : '')));
}

async function run(): Promise<void> {
  let plane: ControlPlane | undefined;
  let resources: Resources;
  // Which CRD sets can be had, and which modes need which (from a render without a cluster).
  const crdsMissing = new Map<CrdSet, string>();
  for (const set of Object.keys(CRD_SETS) as CrdSet[]) {
    const reason = crdSkipReason(set);
    if (reason !== false) crdsMissing.set(set, reason);
  }
  const modes = await Promise.all(
    [...ciModes()].map(async ([mode, file]) => {
      const groups = await renderedGroups(file);
      const missing = [...crdsMissing].find(([set]) => groups.has(CRD_SETS[set].group));
      return { mode, file, skip: missing === undefined ? false : missing[1] };
    }),
  );
  const cp = (): ControlPlane => {
    if (plane === undefined) throw new Error('no control plane');
    return plane;
  };

  t.before(async () => {
    plane = await startControlPlane();
    resources = new Resources(plane);
    await plane.createNode(NODE);
    const available = (Object.keys(CRD_SETS) as CrdSet[]).filter((set) => !crdsMissing.has(set));
    await installCrds(plane, available);
  });
  t.teardown(async () => {
    await plane?.stop();
  });

  t.test('values the schema refuses: helm install fails before anything reaches the cluster', async (t) => {
    const plane = cp();
    const inline = join(plane.dir, 'failure-policy-sometimes.yaml');
    writeFileSync(inline, 'webhook:\n  failurePolicy: Sometimes\n');
    const cases: Array<{ what: string; args: string[]; expect: RegExp }> = [
      { what: '--set webhook.failurePolicy=Sometimes', args: ['--set', 'webhook.failurePolicy=Sometimes'], expect: /at '\/webhook\/failurePolicy': value must be one of 'Ignore', 'Fail'/ },
      { what: 'a values file with failurePolicy: Sometimes', args: ['-f', inline], expect: /at '\/webhook\/failurePolicy': value must be one of 'Ignore', 'Fail'/ },
    ];
    // The unit suite's bad values files (test/chart/bad-values), each with its `# expect:` line.
    const badDir = join(REPO_ROOT, 'test/chart/bad-values');
    for (const f of readdirSync(badDir).filter((name) => name.endsWith('.yaml')).sort()) {
      const path = join(badDir, f);
      const expect = /^# expect: (.+)$/m.exec(readFileSync(path, 'utf8'))?.[1];
      if (expect !== undefined) cases.push({ what: `test/chart/bad-values/${f}`, args: ['-f', path], expect: new RegExp(expect) });
    }
    t.ok(cases.length > 2, `${cases.length} refused installs`);
    const releases = cases.map((_, i) => `bad-${i}`);
    for (const [i, c] of cases.entries()) {
      const release = releases[i]!;
      const r = await helm(plane, ['install', release, CHART, '-n', release, '--create-namespace', NO_WAIT, ...c.args]);
      t.not(r.status, 0, `${c.what}: refused`);
      t.match(r.stderr, /values don't meet the specifications of the schema/, `${c.what}: by the schema`);
      t.match(r.stderr, c.expect, `${c.what}: naming the key and the problem`);
    }
    for (const release of releases) {
      const ns = await plane.api('GET', `/api/v1/namespaces/${release}`);
      t.equal(ns.status, 404, `namespace ${release} was not created`);
    }
    const helmSecrets = await plane.call<{ items: K8sObject[] }>('GET', `/api/v1/secrets?labelSelector=${encodeURIComponent('owner=helm')}`);
    t.same(
      helmSecrets.items.filter((s) => releases.includes(s.metadata.labels?.['name'] ?? '')).map((s) => s.metadata.name),
      [],
      'no helm release record',
    );
    t.same(await labelled(plane, `${INSTANCE} in (${releases.join(',')})`), [], 'no object of those releases anywhere');
  });

  let generateModes = 0;
  for (const { mode, file, skip } of modes) {
    t.test(`${mode}: helm install, upgrade and uninstall on the real API server`, { skip }, async (t) => {
      const plane = cp();
      const values = (parse(readFileSync(file, 'utf8')) ?? {}) as Values;
      const certMode = values.certificates?.certManager?.enabled === true ? 'certManager' : values.certificates?.existingSecret ? 'existingSecret' : 'generate';
      const release = mode;
      const ns = `ci-${mode}`;
      const inRelease = ['-n', ns, '-f', file, NO_WAIT];

      const existingSecret = values.certificates?.existingSecret;
      if (certMode === 'existingSecret' && existingSecret !== undefined) {
        // The Secret the values name, made outside the chart (as certs/generate.sh would).
        await plane.call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
        const pair = plane.issue(`${mode}-external`, `/CN=${release}-safe-termination.${ns}.svc`, `extendedKeyUsage=serverAuth\nsubjectAltName=DNS:${release}-safe-termination.${ns}.svc`);
        await plane.call('POST', `/api/v1/namespaces/${ns}/secrets`, {
          apiVersion: 'v1',
          kind: 'Secret',
          type: 'kubernetes.io/tls',
          metadata: { name: existingSecret },
          data: { 'tls.crt': readFileSync(pair.cert).toString('base64'), 'tls.key': readFileSync(pair.key).toString('base64') },
        });
      }

      const install = await helm(plane, ['install', release, CHART, '--create-namespace', ...inRelease]);
      t.equal(install.status, 0, `helm install exits 0${install.status === 0 ? '' : `: ${install.stderr}`}`);
      if (install.status !== 0) return;
      if (install.stderr.trim() !== '') t.comment(`helm install said:\n${install.stderr.trim()}`);

      const readManifest = async (): Promise<K8sObject[]> => {
        const r = await helm(plane, ['get', 'manifest', release, '-n', ns]);
        if (r.status !== 0) throw new Error(`helm get manifest ${release}: ${r.stderr}`);
        return manifestObjects(r.stdout);
      };
      const checkStored = async (objects: K8sObject[], when: string): Promise<number> => {
        let clusterScoped = 0;
        for (const o of objects) {
          const { path, namespaced } = await resources.path(o, ns);
          if (!namespaced) clusterScoped++;
          const r = await plane.api('GET', path);
          const stored = r.body as K8sObject | undefined;
          t.ok(r.status === 200 && stored?.metadata.annotations?.['meta.helm.sh/release-name'] === release, `${when}: ${describe(o)} is stored, owned by the release (${r.status})`);
        }
        return clusterScoped;
      };

      const objects = await readManifest();
      const kinds = new Set(objects.map((o) => o.kind));
      t.ok(kinds.has('MutatingWebhookConfiguration') && kinds.has('Deployment'), `the release has its webhook: ${[...kinds].sort().join(', ')}`);
      const clusterScoped = await checkStored(objects, 'after install');
      t.ok(clusterScoped > 0, `${clusterScoped} cluster-scoped objects`);

      // The certificate wiring of the mode, as stored.
      const webhook = objects.find((o) => o.kind === 'MutatingWebhookConfiguration')!;
      const deployment = objects.find((o) => o.kind === 'Deployment')!;
      const mwcPath = (await resources.path(webhook, ns)).path;
      const storedWebhook = await plane.call<K8sObject>('GET', mwcPath);
      const caBundle = (): Promise<string | undefined> =>
        plane.call<K8sObject>('GET', mwcPath).then((w) => (w['webhooks'] as Array<{ clientConfig: { caBundle?: string } }>)[0]?.clientConfig.caBundle);
      const mounted = ((deployment['spec'].template.spec.volumes ?? []) as Array<{ secret?: { secretName: string } }>).flatMap((v) => (v.secret ? [v.secret.secretName] : []));
      t.equal(mounted.length, 1, `the webhook pods mount one Secret: ${mounted.join(', ')}`);
      const servingSecret = mounted[0]!;
      let crtBefore: string | undefined;
      if (certMode === 'generate') {
        generateModes++;
        const data = await secretData(plane, ns, servingSecret);
        t.ok(data['tls.crt'] && data['tls.key'] && data['ca.crt'], `the generated Secret ${servingSecret} holds tls.crt, tls.key and ca.crt`);
        t.equal(await caBundle(), data['ca.crt'], 'caBundle is the generated CA');
        crtBefore = data['tls.crt'];
      } else if (certMode === 'existingSecret') {
        t.equal(servingSecret, existingSecret, 'the pods mount the existing Secret');
        const bundle = await caBundle();
        t.equal(Buffer.from(bundle ?? '', 'base64').toString('utf8').trim(), values.certificates?.caBundle?.trim(), 'caBundle is the CA the values give');
      } else {
        const injectFrom = storedWebhook.metadata.annotations?.['cert-manager.io/inject-ca-from'] ?? '';
        const certificate = objects.find((o) => o.kind === 'Certificate' && `${o.metadata.namespace ?? ns}/${o.metadata.name}` === injectFrom);
        t.ok(certificate, `cert-manager.io/inject-ca-from (${injectFrom}) names a Certificate of the release`);
        t.equal(certificate?.['spec'].secretName, servingSecret, 'whose Secret the pods mount');
      }

      const upgrade = await helm(plane, ['upgrade', release, CHART, ...inRelease]);
      t.equal(upgrade.status, 0, `helm upgrade exits 0${upgrade.status === 0 ? '' : `: ${upgrade.stderr}`}`);
      if (upgrade.stderr.trim() !== '') t.comment(`helm upgrade said:\n${upgrade.stderr.trim()}`);
      const status = await helm(plane, ['status', release, '-n', ns, '-o', 'json']);
      t.equal((JSON.parse(status.stdout) as { version?: number }).version, 2, 'the release is at revision 2');
      const upgraded = await readManifest();
      t.same(upgraded.map(describe).sort(), objects.map(describe).sort(), 'the same objects after the upgrade');
      await checkStored(upgraded, 'after upgrade');
      if (certMode === 'generate') {
        const data = await secretData(plane, ns, servingSecret);
        t.equal(data['tls.crt'], crtBefore, 'the upgrade keeps the generated certificate (tls.crt unchanged)');
        t.equal(await caBundle(), data['ca.crt'], 'and the caBundle still matches its CA');
      }

      const uninstall = await helm(plane, ['uninstall', release, '-n', ns]);
      t.equal(uninstall.status, 0, `helm uninstall exits 0${uninstall.status === 0 ? '' : `: ${uninstall.stderr}`}`);
      for (const o of objects) {
        const { path } = await resources.path(o, ns);
        let last = 0;
        await waitFor(`${describe(o)} to be deleted`, 30_000, async () => (last = (await plane.api('GET', path)).status) === 404).catch(() => undefined);
        t.equal(last, 404, `after uninstall: ${describe(o)} is gone`);
      }
      t.same(await labelled(plane, `${INSTANCE}=${release}`), [], `nothing labelled ${INSTANCE}=${release} is left, in any namespace or cluster-wide`);
      t.not((await helm(plane, ['status', release, '-n', ns])).status, 0, 'helm no longer knows the release');
      if (certMode === 'existingSecret') {
        t.equal((await plane.api('GET', `/api/v1/namespaces/${ns}/secrets/${existingSecret}`)).status, 200, 'the existing Secret (not the chart\'s) is left alone');
      }
    });
  }

  t.test('the generated-certificate mode was among the modes', async (t) => {
    t.ok(generateModes > 0, `${generateModes} values files in generate mode`);
  });
}

const skip = controlPlaneSkipReason();
if (skip !== false) {
  t.plan(0, skip);
} else {
  await run();
}
