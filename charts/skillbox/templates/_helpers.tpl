{{/*
The chart's name, overridable with nameOverride.
*/}}
{{- define "skillbox.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: fullnameOverride, else the release name when it
already holds the chart's name, else "<release>-<name>". Kept within 63
characters (label values and DNS names).
*/}}
{{- define "skillbox.fullname" -}}
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

{{/*
The name of the uninstall hook's DaemonSet; the hook's Job waits for it.
*/}}
{{- define "skillbox.uninstallName" -}}
{{- printf "%s-uninstall" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "skillbox.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "skillbox.labels" -}}
helm.sh/chart: {{ include "skillbox.chart" . }}
{{ include "skillbox.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The labels selectors start from; each adds app.kubernetes.io/component
(node or uninstall), so the two DaemonSets never select each other's pods.
*/}}
{{- define "skillbox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skillbox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "skillbox.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "skillbox.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The node image: repository:tag, the tag defaulting to appVersion.
*/}}
{{- define "skillbox.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
One TOML value of the node config: a string, a number, a boolean or an
array of those. Helm reads every YAML number as a float and its toToml
writes 256 as `256.0`, which the node config refuses for integer keys
(pids, keep_files, event_budget), so whole numbers are written as integers
here.
*/}}
{{- define "skillbox.tomlValue" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- . }}
{{- else if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}
{{- . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}{{ $items = append $items (include "skillbox.tomlValue" .) }}{{ end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "nodeConfig: cannot write %v (%s) as a TOML value" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/*
The node config as TOML: one table per top-level key of nodeConfig (the
schema allows only the node config's tables, each a map of values), keys
sorted.
*/}}
{{- define "skillbox.nodeConfigToml" -}}
# /etc/skillbox/config.toml, written by the skillbox chart from the
# nodeConfig value. Keys left out take their built-in values
# (docs/node-config.md).
{{- range $table, $keys := .Values.nodeConfig }}

[{{ $table }}]
{{- range $key, $value := $keys }}
{{ $key }} = {{ include "skillbox.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
NODE_NAME, from the downward API: the node the pod runs on.
*/}}
{{- define "skillbox.nodeNameEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}

{{/*
Where the DaemonSets run: nodeSelector, affinity, tolerations, priority.
*/}}
{{- define "skillbox.placement" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The security context of a container that reads host files but needs no
privilege: root (the audit log is root's), no capabilities, read-only root.
*/}}
{{- define "skillbox.readerSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
How the installer and the uninstaller reach and restart the host's
containerd: its socket, and the systemd unit or a command.
*/}}
{{- define "skillbox.containerdArgs" -}}
{{- if .Values.containerd.restartCommand }}
- --restart-command
- {{ .Values.containerd.restartCommand | quote }}
{{- else }}
- --containerd-unit
- {{ .Values.containerd.unit | quote }}
{{- end }}
- --cri-socket
- {{ .Values.containerd.socket | quote }}
{{- end }}

{{/*
The audit log directory the node config names ([audit] log_dir), else the
built-in one. The metrics and audit-export containers mount
/var/log/skillbox; a log_dir outside it is mounted besides, at the same
path, so the tools' defaults find it.
*/}}
{{- define "skillbox.auditLogDir" -}}
{{- $audit := .Values.nodeConfig.audit | default dict }}
{{- $audit.log_dir | default "/var/log/skillbox/audit" | trimSuffix "/" }}
{{- end }}

{{- define "skillbox.auditLogDirOutside" -}}
{{- $dir := include "skillbox.auditLogDir" . }}
{{- if not (or (eq $dir "/var/log/skillbox") (hasPrefix "/var/log/skillbox/" $dir)) }}{{ $dir }}{{ end }}
{{- end }}
