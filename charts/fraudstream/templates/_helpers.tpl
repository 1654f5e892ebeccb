{{/* Chart name, overridable with nameOverride; cut to 63 characters (a DNS label). */}}
{{- define "fraudstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release name already holds the chart name; 63 characters at most. */}}
{{- define "fraudstream.fullname" -}}
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

{{/* Name of one component's objects: fullname-component, cut so the whole stays within 63 characters. */}}
{{- define "fraudstream.componentName" -}}
{{- $full := include "fraudstream.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" }}
{{- printf "%s-%s" $full .component }}
{{- end }}

{{/* Chart name and version as used by the helm.sh/chart label. */}}
{{- define "fraudstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels of every object of one component (call with dict "root" $ "component" "scorer"). */}}
{{- define "fraudstream.labels" -}}
helm.sh/chart: {{ include "fraudstream.chart" .root }}
{{ include "fraudstream.selectorLabels" . }}
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: fraudstream
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: only labels that never change over a release's life (name, instance, component). */}}
{{- define "fraudstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fraudstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of the ServiceAccount the pods run as. */}}
{{- define "fraudstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fraudstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference from a dict with repository, tag and digest; the tag defaults to the chart's appVersion and the digest is appended when set. */}}
{{- define "fraudstream.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString | trimSuffix "@" }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the Secret that holds the database password. */}}
{{- define "fraudstream.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- include "fraudstream.componentName" (dict "root" . "component" "database") }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding CARD_KEY_SECRET: cardKey.existingSecret, or the chart's own "<fullname>-card-key". */}}
{{- define "fraudstream.cardKeySecretName" -}}
{{- if .Values.cardKey.existingSecret }}
{{- .Values.cardKey.existingSecret }}
{{- else }}
{{- include "fraudstream.componentName" (dict "root" . "component" "card-key") }}
{{- end }}
{{- end }}

{{/* CARD_KEY_SECRET from its Secret: every container that computes card keys or derives transaction ids (scorer, ui, load-test workers). */}}
{{- define "fraudstream.cardKeyEnv" -}}
- name: CARD_KEY_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstream.cardKeySecretName" . }}
      key: {{ .Values.cardKey.existingSecretKey | default "card-key" }}
{{- end }}

{{/* libpq URL without the password (libpq reads that from PGPASSWORD, so it never sits in a ConfigMap). */}}
{{- define "fraudstream.databaseUrl" -}}
{{- with .Values.database }}
{{- printf "postgresql://%s@%s:%d/%s" .user .host (int .port) .name }}
{{- if .sslmode }}?sslmode={{ .sslmode }}{{ end }}
{{- end }}
{{- end }}

{{/* Environment of every container that talks to PostgreSQL: the URL and the password from the Secret. */}}
{{- define "fraudstream.databaseEnv" -}}
- name: DATABASE_URL
  value: {{ include "fraudstream.databaseUrl" . | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstream.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretPasswordKey | default "password" }}
{{- end }}

{{/* Environment shared by every container that talks to Kafka. */}}
{{- define "fraudstream.kafkaEnv" -}}
KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
TOPIC_TRANSACTIONS: {{ .Values.kafka.topics.transactions | quote }}
TOPIC_SCORING: {{ .Values.kafka.topics.scoring | quote }}
TOPIC_SCORING_SHADOW: {{ .Values.kafka.topics.scoringShadow | quote }}
TOPIC_DLQ: {{ .Values.kafka.topics.dlq | quote }}
TOPIC_LABELS: {{ .Values.kafka.topics.labels | quote }}
TOPIC_PARTITIONS: {{ .Values.kafka.topics.partitions | quote }}
TOPIC_RETENTION_MS: {{ .Values.kafka.topics.retentionMs | int64 | quote }}
TOPIC_RETENTION_BYTES: {{ .Values.kafka.topics.retentionBytes | int64 | quote }}
{{- end }}

{{/* Logging environment shared by every container. */}}
{{- define "fraudstream.logEnv" -}}
LOG_LEVEL: {{ .Values.logging.level | quote }}
LOG_FORMAT: {{ .Values.logging.format | quote }}
{{- end }}

{{/* Container-level security context shared by every container: non-root, read-only root, no capabilities. */}}
{{- define "fraudstream.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* In-cluster URL of the scorer Service. */}}
{{- define "fraudstream.scorerUrl" -}}
{{- printf "http://%s:%d" (include "fraudstream.componentName" (dict "root" . "component" "scorer")) (int .Values.scorer.service.port) }}
{{- end }}

{{/* Scheduling fields of a pod spec from one component's values (nodeSelector, affinity, tolerations, spread). */}}
{{- define "fraudstream.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod security context for an image (call with dict "root" $ "uid" 1034): the shared settings plus the image's numeric user. */}}
{{- define "fraudstream.podSecurityContextFor" -}}
{{- $ids := dict "runAsUser" (int .uid) "runAsGroup" (int .uid) "fsGroup" (int .uid) }}
{{- toYaml (merge $ids (deepCopy .root.Values.podSecurityContext)) }}
{{- end }}

{{/* Name of the PersistentVolumeClaim holding the retrain model store (retrain.enabled). */}}
{{- define "fraudstream.modelsClaim" -}}
{{- .Values.retrain.persistence.existingClaim | default (printf "%s-models" (include "fraudstream.fullname" .)) }}
{{- end }}

{{/*
Checksum of one component's own ConfigMap (dict "root" $ "component" NAME), for its pods'
checksum/config annotation: a component restarts when its settings change, not when another
component's do (enabling the challenger changes the bridge's ConfigMap, not the scorer's).
*/}}
{{- define "fraudstream.configChecksum" -}}
{{- $name := include "fraudstream.componentName" . -}}
{{- $mine := "" -}}
{{- range splitList "\n---\n" (include (print .root.Template.BasePath "/configmap.yaml") .root) -}}
{{- if contains (printf "\n  name: %s\n" $name) . -}}
{{- $mine = . -}}
{{- end -}}
{{- end -}}
{{- if not $mine -}}
{{- fail (printf "no ConfigMap named %s in configmap.yaml" $name) -}}
{{- end -}}
{{- $mine | sha256sum -}}
{{- end -}}
