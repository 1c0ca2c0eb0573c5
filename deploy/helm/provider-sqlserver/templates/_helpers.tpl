{{/* Labels on every object of the chart. */}}
{{- define "provider-sqlserver.labels" -}}
{{ include "provider-sqlserver.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Labels that select the provider's pods (the same as deploy/install). */}}
{{- define "provider-sqlserver.selectorLabels" -}}
app.kubernetes.io/name: provider-sqlserver
app.kubernetes.io/component: provider
{{- end }}
