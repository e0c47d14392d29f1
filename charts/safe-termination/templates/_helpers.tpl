{{/* Names, labels, image, and the checks every template relies on. */}}

{{- define "safe-termination.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "safe-termination.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "safe-termination.agentName" -}}
{{- printf "%s-agent" (include "safe-termination.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "safe-termination.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object; pass (dict "ctx" $ "component" "webhook"). The chart's
own labels win over commonLabels (no duplicate keys).
*/}}
{{- define "safe-termination.labels" -}}
{{- $ := .ctx -}}
{{- $labels := dict "helm.sh/chart" (include "safe-termination.chart" $) "app.kubernetes.io/version" $.Chart.AppVersion "app.kubernetes.io/managed-by" $.Release.Service "app.kubernetes.io/part-of" "safe-termination" }}
{{- $labels = merge $labels (include "safe-termination.selectorLabels" . | fromYaml) }}
{{- toYaml (merge $labels (deepCopy ($.Values.commonLabels | default dict))) }}
{{- end }}

{{- define "safe-termination.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safe-termination.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
Labels of the chart's own pods (pass "extra": the podLabels value): they opt out
of their own webhook too, whatever podLabels say.
*/}}
{{- define "safe-termination.podLabels" -}}
{{- $labels := include "safe-termination.labels" . | fromYaml }}
{{- $_ := set $labels "safe-termination.io/inject" "disabled" }}
{{- toYaml (merge $labels (deepCopy (.extra | default dict))) }}
{{- end }}

{{- define "safe-termination.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "safe-termination.webhookServiceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create }}
{{- default (include "safe-termination.fullname" .) .Values.webhook.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.webhook.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "safe-termination.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "safe-termination.agentName" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "safe-termination.webhookConfigurationName" -}}
{{- default (printf "zz-%s" (include "safe-termination.fullname" .)) .Values.webhook.configurationName | trunc 253 }}
{{- end }}

{{/*
A Service name from a generated name: Service names are DNS-1035 labels (at most 63
characters, a letter first, no dots), stricter than other objects' names. A release
name may have dots (they become dashes) or start with a digit (the render fails).
*/}}
{{- define "safe-termination.dns1035" -}}
{{- $name := replace "." "-" . | trunc 63 | trimSuffix "-" }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "the Service name %q (made from the release name, nameOverride or fullnameOverride) is not a DNS-1035 label: lower-case letters, digits and '-', starting with a letter; set fullnameOverride to such a name" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "safe-termination.serviceName" -}}
{{- include "safe-termination.dns1035" (include "safe-termination.fullname" .) }}
{{- end }}

{{/*
The agent's headless metrics Service, <fullname>-agent-metrics within 63 characters;
also the job label prometheus-operator gives the agent series.
*/}}
{{- define "safe-termination.agentMetricsName" -}}
{{- include "safe-termination.dns1035" (printf "%s-agent-metrics" (include "safe-termination.fullname" . | trunc 49 | trimSuffix "-")) }}
{{- end }}

{{/* The self-signed CA (cert-manager mode: Certificate, Secret, Issuer; generate mode:
its commonName): within 63 characters, and so a commonName within X.509's 64. */}}
{{- define "safe-termination.caName" -}}
{{- printf "%s-ca" (include "safe-termination.fullname" . | trunc 60 | trimSuffix "-") }}
{{- end }}

{{/* The DNS names the API server may use for the Service (it calls <svc>.<ns>.svc). */}}
{{- define "safe-termination.dnsNames" -}}
{{- $svc := include "safe-termination.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{/*
The certificate mode: generate | certManager | existingSecret. Conflicting or
incomplete options fail the render here, with what to change.
*/}}
{{- define "safe-termination.certMode" -}}
{{- $c := .Values.certificates }}
{{- if and $c.certManager.enabled $c.existingSecret }}
{{- fail (printf "certificates: certManager.enabled=true and existingSecret=%q are two certificate modes; choose one (unset certificates.existingSecret or set certificates.certManager.enabled=false)" $c.existingSecret) }}
{{- end }}
{{- if $c.existingSecret }}
{{- if not $c.caBundle }}
{{- fail (printf "certificates.existingSecret=%q needs certificates.caBundle: the PEM of the CA that signed it, for the webhook configuration's caBundle" $c.existingSecret) }}
{{- end }}
{{- "existingSecret" }}
{{- else }}
{{- if $c.caBundle }}
{{- fail "certificates.caBundle is only used with certificates.existingSecret (the other modes make their own CA); set certificates.existingSecret or unset certificates.caBundle" }}
{{- end }}
{{- if $c.certManager.enabled }}
{{- "certManager" }}
{{- else }}
{{- if $c.certManager.issuerRef }}
{{- fail "certificates.certManager.issuerRef is set but certificates.certManager.enabled is false; enable cert-manager mode or unset the issuerRef" }}
{{- end }}
{{- "generate" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding tls.crt and tls.key in every mode. */}}
{{- define "safe-termination.tlsSecretName" -}}
{{- if eq (include "safe-termination.certMode" .) "existingSecret" }}
{{- .Values.certificates.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "safe-termination.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/* caBundle of existingSecret mode: PEM given as text or as base64 of the PEM. */}}
{{- define "safe-termination.existingCaBundle" -}}
{{- $given := .Values.certificates.caBundle | trim }}
{{- $pem := $given }}
{{- if not (hasPrefix "-----BEGIN" $given) }}
{{- $pem = b64dec $given }}
{{- end }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" $pem) }}
{{- fail "certificates.caBundle must be a PEM certificate (-----BEGIN CERTIFICATE-----…) or the base64 of one" }}
{{- end }}
{{- $pem | b64enc }}
{{- end }}

{{/* A duration value (integer seconds or "1m30s") as flag text. */}}
{{- define "safe-termination.duration" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}

{{/* Flags of `safe-termination serve` (src/config.ts SERVE_FLAGS), as a YAML list. */}}
{{- define "safe-termination.webhookArgs" -}}
{{- $v := .Values }}
{{- $w := .Values.webhook }}
{{- $d := "safe-termination.duration" }}
{{- $args := list "serve"
  (printf "--port=%d" (int64 $w.port))
  (printf "--metrics-port=%d" (int64 $w.metricsPort))
  (printf "--bind-address=%s" $w.bindAddress)
  "--tls-cert-file=/etc/safe-termination/tls/tls.crt"
  "--tls-private-key-file=/etc/safe-termination/tls/tls.key"
  (printf "--tls-reload-interval=%s" (include $d $w.tlsReloadInterval))
  (printf "--max-connections=%d" (int64 $w.maxConnections))
  (printf "--max-body-bytes-in-flight=%d" (int64 $w.maxBodyBytesInFlight))
  (printf "--log-level=%s" $w.logLevel)
  (printf "--shutdown-delay=%s" (include $d $w.shutdownDelay))
  (printf "--shutdown-timeout=%s" (include $d $w.shutdownTimeout))
  (printf "--informer-sync-timeout=%s" (include $d $w.informerSyncTimeout))
  (printf "--kube-proxy-configmap=%s" $w.kubeProxyConfigMap)
  (printf "--kube-proxy-interval=%s" (include $d $w.kubeProxyInterval))
  (printf "--services-informer=%t" $w.services.enabled)
  (printf "--propagation-delay=%s" (include $d $v.sizing.propagationDelay))
  (printf "--max-sleep=%s" (include $d $v.sizing.maxSleep))
}}
{{- if ne (toString $v.sizing.shutdownBudget) "" }}
{{- $args = append $args (printf "--shutdown-budget=%s" (include $d $v.sizing.shutdownBudget)) }}
{{- end }}
{{- $args = concat $args (list
  (printf "--tcp-sizing=%s" $v.sizing.tcp)
  (printf "--udp-streams=%t" $v.sizing.udpStreams)
  (printf "--prestop-mode=%s" $v.prestopMode)
  (printf "--existing-prestop=%s" $v.existingPrestop)
  (printf "--invalid-annotations=%s" $v.invalidAnnotations)
  (printf "--inject-job-pods=%t" $v.injectJobPods)
) }}
{{- with $v.kubernetesVersion }}
{{- $args = append $args (printf "--kubernetes-version=%s" .) }}
{{- end }}
{{- $s := $v.conntrack.static }}
{{- $args = concat $args (list
  (printf "--static-udp-timeout=%d" (int64 $s.udpTimeout))
  (printf "--static-udp-timeout-stream=%d" (int64 $s.udpTimeoutStream))
  (printf "--static-tcp-timeout-time-wait=%d" (int64 $s.tcpTimeoutTimeWait))
  (printf "--static-tcp-timeout-close-wait=%d" (int64 $s.tcpTimeoutCloseWait))
  (printf "--static-tcp-timeout-established=%d" (int64 $s.tcpTimeoutEstablished))
) $w.extraArgs }}
{{- toYaml $args }}
{{- end }}

{{/* Flags of `safe-termination agent` (src/config.ts AGENT_FLAGS), as a YAML list; the node name comes from the environment. */}}
{{- define "safe-termination.agentArgs" -}}
{{- $a := .Values.agent }}
{{- $args := list "agent"
  (printf "--interval=%s" (include "safe-termination.duration" $a.interval))
  (printf "--metrics-port=%d" (int64 $a.metricsPort))
  (printf "--log-level=%s" $a.logLevel)
}}
{{- /* Empty: the node's address, from the downward API (SAFE_TERMINATION_BIND_ADDRESS). */}}
{{- with $a.bindAddress }}
{{- $args = append $args (printf "--bind-address=%s" .) }}
{{- end }}
{{- if $a.staleConntrack.enabled }}
{{- $args = append $args (printf "--stale-conntrack-interval=%s" (include "safe-termination.duration" $a.staleConntrack.interval)) }}
{{- end }}
{{- if $a.endpointChanges.enabled }}
{{- $args = append $args "--endpoint-changes" }}
{{- end }}
{{- /* --reap is on by default in the binary: the chart always says which. */}}
{{- if $a.reap.enabled }}
{{- $args = append $args "--reap=true" }}
{{- $args = append $args (printf "--reap-hold=%s" (include "safe-termination.duration" $a.reap.hold)) }}
{{- $args = append $args (printf "--reap-max-per-second=%d" (int64 $a.reap.maxPerSecond)) }}
{{- if $a.reap.dryRun }}
{{- $args = append $args "--reap-dry-run" }}
{{- end }}
{{- else }}
{{- $args = append $args "--reap=false" }}
{{- end }}
{{- if or $a.reap.enabled $a.staleConntrack.enabled }}
{{- $args = append $args (printf "--conntrack-read-timeout=%s" (include "safe-termination.duration" $a.conntrackReadTimeout)) }}
{{- end }}
{{- toYaml (concat $args $a.extraArgs) }}
{{- end }}

{{/*
The agent pod's securityContext: the values', plus supplementary group 0 with the
stale-entry count (/proc/net/nf_conntrack is 0440 root:root; group 0 reads it
without any capability).
*/}}
{{- define "safe-termination.agentPodSecurityContext" -}}
{{- $sc := deepCopy .Values.agent.podSecurityContext }}
{{- if .Values.agent.staleConntrack.enabled }}
{{- $groups := list }}
{{- range ($sc.supplementalGroups | default list) }}{{ $groups = append $groups (int64 .) }}{{ end }}
{{- $_ := set $sc "supplementalGroups" (append $groups (int64 0) | uniq) }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/*
The agent container's securityContext: the values', and with agent.reap.enabled
root (uid 0) with NET_ADMIN as its only capability. Deleting conntrack entries needs
CAP_NET_ADMIN in the process that talks netlink — the conntrack tool the agent runs.
Kubernetes sets no ambient capabilities, so a non-root user gets an added capability
only in its bounding set, and loses it at execve; file capabilities on the tool would
need allowPrivilegeEscalation. Root keeps the added capability across execve, and
with every other capability dropped, no privilege escalation and a read-only root
filesystem it can do nothing else a non-root user could not (no CAP_DAC_OVERRIDE:
it cannot read or write files it does not own).
*/}}
{{- define "safe-termination.agentContainerSecurityContext" -}}
{{- $sc := deepCopy .Values.agent.securityContext }}
{{- if .Values.agent.reap.enabled }}
{{- $caps := deepCopy ($sc.capabilities | default dict) }}
{{- $add := list }}
{{- range ($caps.add | default list) }}{{ $add = append $add . }}{{ end }}
{{- $_ := set $caps "add" (append $add "NET_ADMIN" | uniq) }}
{{- if not $caps.drop }}{{ $_ := set $caps "drop" (list "ALL") }}{{ end }}
{{- $_ := set $sc "capabilities" $caps }}
{{- $_ := set $sc "runAsNonRoot" false }}
{{- $_ := set $sc "runAsUser" (int64 0) }}
{{- $_ := set $sc "runAsGroup" (int64 0) }}
{{- $_ := set $sc "allowPrivilegeEscalation" false }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* The webhook pods' selector, for topology spread and PDB. */}}
{{- define "safe-termination.webhookSelector" -}}
{{ include "safe-termination.selectorLabels" (dict "ctx" . "component" "webhook") }}
{{- end }}

{{/* Seconds of a Go-style duration such as "168h", "90m", "1h30m" or "45s". */}}
{{- define "safe-termination.goDurationSeconds" -}}
{{- $total := 0 }}
{{- range $part := regexFindAll "[0-9]+[hms]" (toString .) -1 }}
{{- $n := int64 (trimSuffix "h" (trimSuffix "m" (trimSuffix "s" $part))) }}
{{- if hasSuffix "h" $part }}{{ $total = add $total (mul $n 3600) }}{{ else if hasSuffix "m" $part }}{{ $total = add $total (mul $n 60) }}{{ else }}{{ $total = add $total $n }}{{ end }}
{{- end }}
{{- $total }}
{{- end }}

{{/* The namespace of the agent's objects: agent.namespace, or the release namespace. */}}
{{- define "safe-termination.agentNamespace" -}}
{{- .Values.agent.namespace | default .Release.Namespace -}}
{{- end }}
