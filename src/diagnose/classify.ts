/**
 * Classify DNATed conntrack entries against the current endpoints of the
 * Services they were translated for, and group them by Service and protocol.
 * Pure: entries and an index in, a report out.
 *
 * An entry is attributed to a Service port by its original destination (cluster,
 * external or load-balancer IP and port, or a node port). Its DNAT target (the
 * reply source) is then:
 *   live      a serving endpoint of that Service, not terminating;
 *   draining  a terminating endpoint that still serves (a preStop hook holds it up);
 *   stale     anything else: the endpoint is gone or no longer serves. Packets of
 *             this flow still go there — the ghost connection.
 *   closed    a TCP entry in TIME_WAIT or CLOSE (SCTP: CLOSED), wherever it points:
 *             a new SYN on the same tuple replaces it and is translated afresh,
 *             so it cannot misroute traffic.
 * This is kube-proxy's own rule for its UDP cleanup (orig-dst is a Service IP and
 * reply-src is not one of its serving endpoints), applied to every protocol.
 *
 * The rule is implemented once, entry by entry, by DiagnoseTally (tally.ts), which
 * the agent feeds straight from the table; `diagnose()` feeds it a list.
 */
import type { ConntrackEntry } from './conntrack.ts';
import type { ServiceIndex } from './endpoints.ts';
import type { DiagnoseReport, StaleCount } from './report.ts';
import { DiagnoseTally } from './tally.ts';

/** The whole diagnosis: classify and group by Service and protocol. */
export function diagnose(entries: readonly ConntrackEntry[], index: ServiceIndex): DiagnoseReport {
  const tally = new DiagnoseTally(index);
  for (const entry of entries) tally.add(entry);
  return tally.report();
}

/** The agent metric's samples: stale entries per Service and protocol (groups without any are left out). */
export function staleCounts(report: DiagnoseReport): StaleCount[] {
  return report.groups.filter((g) => g.stale > 0).map((g) => ({ namespace: g.namespace, service: g.service, protocol: g.protocol, stale: g.stale }));
}
