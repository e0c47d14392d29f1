/**
 * webhook.services.enabled: on by default, it grants the webhook
 * get/list/watch on services and runs `serve --services-informer=true`; off, the
 * grant and the informer go together.
 */
import t from 'tap';
import { parseServeConfig } from '../../src/cli/config.ts';
import { ofKind, podSpecOf, render } from './render.ts';

const webhookRole = (objects: Awaited<ReturnType<typeof render>>) => ofKind(objects, 'ClusterRole').find((r) => r.metadata.name === 'safe-termination-webhook');
const serveConfig = (objects: Awaited<ReturnType<typeof render>>) => parseServeConfig(podSpecOf(ofKind(objects, 'Deployment')[0]!).containers[0].args.slice(1), {});

t.test('default: the informer on, services get/list/watch granted', async (t) => {
  const objects = await render();
  t.equal(serveConfig(objects).servicesInformer, true);
  t.same(
    webhookRole(objects)?.rules.find((r: { resources: string[] }) => r.resources.includes('services')),
    { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'watch'] },
  );
});

t.test('webhook.services.enabled=false: neither the informer nor the grant', async (t) => {
  const objects = await render({ set: ['webhook.services.enabled=false'] });
  t.equal(serveConfig(objects).servicesInformer, false);
  t.same(webhookRole(objects)?.rules, [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] }]);
});

t.test('the schema refuses a non-boolean', async (t) => {
  await t.rejects(render({ set: ['webhook.services.enabled=maybe'] }));
});
