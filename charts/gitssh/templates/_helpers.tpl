{{/* The chart name, overridable. */}}
{{- define "gitssh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects; also the SSH Service's name, passed to gitssh as
--service-name. A release named "gitssh" gives "gitssh".
*/}}
{{- define "gitssh.fullname" -}}
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

{{- define "gitssh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gitssh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitssh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gitssh.labels" -}}
helm.sh/chart: {{ include "gitssh.chart" . }}
{{ include "gitssh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gitssh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gitssh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The host key Secret. Its default name does not depend on the release, so a reinstall
finds the same identity.
*/}}
{{- define "gitssh.hostKeySecret" -}}
{{- default "gitssh-host-keys" .Values.hostKey.existingSecret }}
{{- end }}

{{- define "gitssh.knownHostsConfigMap" -}}
{{- printf "%s-known-hosts" (include "gitssh.hostKeySecret" .) }}
{{- end }}

{{- define "gitssh.claimName" -}}
{{- default (printf "%s-repositories" (include "gitssh.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* "true" when the repository volume can be mounted by one node only. */}}
{{- define "gitssh.singleWriterVolume" -}}
{{- if and .Values.persistence.enabled (or (has "ReadWriteOnce" .Values.persistence.accessModes) (has "ReadWriteOncePod" .Values.persistence.accessModes)) (not (has "ReadWriteMany" .Values.persistence.accessModes)) -}}
true
{{- end }}
{{- end }}

{{/*
Seconds in a Go duration made of whole h, m and s (e.g. "1m30s"); empty for other forms
(fractions, ms), which are then not checked.
*/}}
{{- define "gitssh.durationSeconds" -}}
{{- $d := toString . }}
{{- if regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $d }}
{{- $h := regexFind "[0-9]+h" $d | trimSuffix "h" | default "0" | int }}
{{- $m := regexFind "[0-9]+m" $d | trimSuffix "m" | default "0" | int }}
{{- $s := regexFind "[0-9]+s" $d | trimSuffix "s" | default "0" | int }}
{{- add (mul $h 3600) (mul $m 60) $s }}
{{- end }}
{{- end }}

{{/*
Per-source penalties need each client's own address. Unless set, they are on only when
gitssh sees it (the PROXY protocol, or externalTrafficPolicy Local); behind kube-proxy's
SNAT one user's failed logins would get a node's address refused, for everyone behind it.
*/}}
{{- define "gitssh.perSourcePenalties" -}}
{{- if .Values.ssh.perSourcePenalties -}}
{{- .Values.ssh.perSourcePenalties -}}
{{- else if or (ne .Values.ssh.proxyProtocol "off") (eq .Values.service.externalTrafficPolicy "Local") -}}
authfail:5s,noauth:1s,min:15s,max:10m
{{- else -}}
off
{{- end -}}
{{- end }}
