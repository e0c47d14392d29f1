import { validityProblem } from './tls.ts';

/** The serving certificate's validity, for /readyz. */
export interface CertificateValidity {
  /** Seconds since the epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/** What readiness depends on; set by the wiring, read by /readyz. */
export class ServerState {
  certificateLoaded = false;
  /** The certificate being served; readiness checks its validity at each probe. */
  certificate: CertificateValidity | undefined;
  /** In-cluster: the node informer synced or its sync timeout passed. */
  factsReady = true;
  shuttingDown = false;

  /** Reasons the webhook is not ready; empty when ready. */
  notReadyReasons(nowMs: number = Date.now()): string[] {
    const reasons: string[] = [];
    if (this.shuttingDown) reasons.push('shutting down');
    if (!this.certificateLoaded) reasons.push('serving certificate not loaded');
    const problem = this.certificate === undefined ? undefined : validityProblem(this.certificate, nowMs);
    if (problem !== undefined) reasons.push(`serving certificate ${problem}`);
    if (!this.factsReady) reasons.push('cluster facts not synced yet');
    return reasons;
  }

  /** The certificate's dates and the seconds left, for /readyz's detail. */
  certificateDetail(nowMs: number = Date.now()): { notBefore: string; notAfter: string; expiresInSeconds: number } | undefined {
    const c = this.certificate;
    if (c === undefined) return undefined;
    return {
      notBefore: new Date(c.notBefore * 1000).toISOString(),
      notAfter: new Date(c.notAfter * 1000).toISOString(),
      expiresInSeconds: Math.floor(c.notAfter - nowMs / 1000),
    };
  }
}
