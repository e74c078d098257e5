{{- define "kubetts.name" -}}kubetts{{- end -}}

{{- define "kubetts.fullname" -}}
{{- if contains "kubetts" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kubetts" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubetts.operatorName" -}}{{ include "kubetts.fullname" . }}-operator{{- end -}}

{{- define "kubetts.labels" -}}
app.kubernetes.io/name: {{ include "kubetts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubetts.operatorSelector" -}}
app.kubernetes.io/name: {{ include "kubetts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetts.operatorImage" -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag | default .Chart.AppVersion }}
{{- end -}}
