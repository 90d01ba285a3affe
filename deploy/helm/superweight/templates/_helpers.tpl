{{/* The chart's name, overridable. */}}
{{- define "superweight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: names every object (63 characters at most). */}}
{{- define "superweight.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "superweight.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the pods (immutable in a Deployment: never add to it). */}}
{{- define "superweight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "superweight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "superweight.labels" -}}
helm.sh/chart: {{ include "superweight.chart" . }}
{{ include "superweight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: superweight
{{- end -}}

{{- define "superweight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "superweight.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "superweight.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/*
OMP_NUM_THREADS: ompNumThreads when set, else resources.limits.cpu rounded up (at least 1):
"2" -> 2, 1.5 -> 2, "500m" -> 1, "2500m" -> 3. Empty when neither is set (the Deployment then
takes the value from the Downward API).
*/}}
{{- define "superweight.ompNumThreads" -}}
{{- if .Values.ompNumThreads -}}
{{- .Values.ompNumThreads | toString -}}
{{- else -}}
{{- $cpu := "" -}}
{{- with .Values.resources -}}{{- with .limits -}}{{- with .cpu -}}{{- $cpu = toString . -}}{{- end -}}{{- end -}}{{- end -}}
{{- if $cpu -}}
{{- if hasSuffix "m" $cpu -}}
{{- max 1 (ceil (divf (trimSuffix "m" $cpu | float64) 1000) | int) -}}
{{- else -}}
{{- max 1 (ceil ($cpu | float64) | int) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Whether more than one pod may run at once (replicaCount or the autoscaler's maximum). */}}
{{- define "superweight.multiReplica" -}}
{{- if or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1)) -}}
true
{{- end -}}
{{- end -}}

{{/* Combinations of values that cannot work, refused with what to change. */}}
{{- define "superweight.validate" -}}
{{- if not .Values.models.existingClaim -}}
{{- fail "models.existingClaim is required: the name of an existing PersistentVolumeClaim holding the models (mounted read-only at /models)" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.jobStore.existingSecret) -}}
{{- fail (printf "replicaCount is %d but jobStore.existingSecret is empty: more than one replica needs the shared PostgreSQL job store (an existing Secret whose key %q holds its postgresql:// URL); with the file store keep replicaCount at 1" (int .Values.replicaCount) .Values.jobStore.key) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1) (not .Values.jobStore.existingSecret) -}}
{{- fail "autoscaling.enabled scales beyond 1 replica but jobStore.existingSecret is empty: the replicas need the shared PostgreSQL job store" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.exports.enabled .Values.exports.existingClaim (not .Values.exports.perPodSubdirectory) (include "superweight.multiReplica" .) -}}
{{- fail "exports.perPodSubdirectory is off with more than one replica: each server locks its export root, so the replicas cannot share one directory of exports.existingClaim" -}}
{{- end -}}
{{- end -}}
