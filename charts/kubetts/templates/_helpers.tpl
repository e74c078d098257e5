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

{{- /* The webhook token: the one in an existing Secret (upgrades keep it), else a new random one,
drawn once per render (every copy of it must match). */ -}}
{{- define "kubetts.webhookToken" -}}
{{- if not (hasKey .Release "kubettsWebhookToken") -}}
{{- $name := printf "%s-webhook-token" (include "kubetts.fullname" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $token := randAlphaNum 40 -}}
{{- if and $existing $existing.data -}}
{{- $token = index $existing.data "token" | b64dec -}}
{{- end -}}
{{- $_ := set .Release "kubettsWebhookToken" $token -}}
{{- end -}}
{{- get .Release "kubettsWebhookToken" -}}
{{- end -}}

{{- define "kubetts.webhookTokenSecret" -}}
{{- .Values.operator.webhook.tokenSecret | default (printf "%s-webhook-token" (include "kubetts.fullname" .)) -}}
{{- end -}}
