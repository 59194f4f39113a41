{{- define "attune.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "attune.labels" -}}
app.kubernetes.io/name: attune-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "attune.selectorLabels" -}}
app.kubernetes.io/name: attune-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "attune.serviceAccountName" -}}
{{- default (include "attune.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- /* The ClusterRole with the operator's Secret verbs (cluster mode). */ -}}
{{- define "attune.worldSecretsRole" -}}
{{- printf "%s-world-secrets" (include "attune.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "attune.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "attune.serviceAccountName" .) -}}
{{- end -}}
