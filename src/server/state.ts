/** What readiness depends on; set by the wiring, read by /readyz. */
export class ServerState {
  certificateLoaded = false;
  /** In-cluster: the node informer synced or its sync timeout passed. */
  factsReady = true;
  shuttingDown = false;

  /** Reasons the webhook is not ready; empty when ready. */
  notReadyReasons(): string[] {
    const reasons: string[] = [];
    if (this.shuttingDown) reasons.push('shutting down');
    if (!this.certificateLoaded) reasons.push('serving certificate not loaded');
    if (!this.factsReady) reasons.push('cluster facts not synced yet');
    return reasons;
  }
}
