/** The settings table: what a pod annotation and the flag of the same setting accept agree. */
import t from 'tap';
import { readSettings } from '../../src/core/annotations.ts';
import { Annotation, KNOWN_ANNOTATIONS } from '../../src/core/names.ts';
import { MODEL_DEFAULTS } from '../../src/core/model.ts';
import { MODEL_FLAGS } from '../../src/cli/config.ts';
import { formatDefault } from '../../src/cli/help.ts';
import type { FlagSpec } from '../../src/cli/config.ts';

t.test('a flag default written as its annotation means the same for the pod', async (t) => {
  const annotated = Object.entries(MODEL_FLAGS as Readonly<Record<string, FlagSpec<unknown>>>).filter(([name]) => name in Annotation);
  t.same(annotated.map(([n]) => n).sort(), ['existingPrestop', 'maxSleep', 'prestopMode', 'propagationDelay', 'shutdownBudget', 'udpStreams']);
  for (const [name, spec] of annotated) {
    if (spec.default === undefined) continue;
    const key = Annotation[name as keyof typeof Annotation];
    const { settings, problems } = readSettings({ [key]: formatDefault(spec) }, []);
    t.same(problems, [], `${key}: ${formatDefault(spec)} is valid`);
    t.same((settings as Record<string, unknown>)[name], spec.default, `${key} reads like --${name}`);
  }
});

t.test('the annotation keys are the documented ones, in their order', async (t) => {
  t.same(
    KNOWN_ANNOTATIONS.map((k) => k.replace('safe-termination.io/', '')),
    ['inject', 'prestop-sleep', 'propagation-delay', 'shutdown-budget', 'max-sleep', 'protocols', 'udp-streams', 'containers', 'exclude-containers', 'prestop-mode', 'existing-prestop', 'injected'],
  );
});

t.test('the model defaults are the flag defaults', async (t) => {
  t.same(MODEL_DEFAULTS, {
    propagationDelaySeconds: MODEL_FLAGS.propagationDelay.default,
    shutdownBudgetSeconds: MODEL_FLAGS.shutdownBudget.default,
    maxSleepSeconds: MODEL_FLAGS.maxSleep.default,
    tcpSizing: MODEL_FLAGS.tcpSizing.default,
    udpStreams: MODEL_FLAGS.udpStreams.default,
    prestopMode: MODEL_FLAGS.prestopMode.default,
    existingPrestop: MODEL_FLAGS.existingPrestop.default,
    invalidAnnotations: MODEL_FLAGS.invalidAnnotations.default,
    injectJobPods: MODEL_FLAGS.injectJobPods.default,
  });
});
