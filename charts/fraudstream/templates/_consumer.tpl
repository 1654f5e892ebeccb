{{/* Deployment of one Kafka consumer (call with dict "root" $ "component" "bridge"|"writer"|"labels"; the shadow writer adds "values" .Values.writer "command" "writer" "configMap" "writer" "env" (list of name/value overrides)). */}}
{{- define "fraudstream.consumerDeployment" -}}
{{- $root := .root }}
{{- $values := .values | default (index $root.Values .component) }}
{{- $command := .command | default .component }}
{{- $partitions := int $root.Values.kafka.topics.partitions }}
{{- if gt (int $values.replicaCount) $partitions }}
{{- fail (printf "%s.replicaCount (%d) is more than kafka.topics.partitions (%d): the extra consumers would sit idle" .component (int $values.replicaCount) $partitions) }}
{{- end }}
{{- $keda := and (eq .component "bridge") $values.keda.enabled }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fraudstream.componentName" . }}
  labels:
    {{- include "fraudstream.labels" . | nindent 4 }}
spec:
  {{- if not $keda }}
  replicas: {{ $values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "fraudstream.selectorLabels" . | nindent 6 }}
  strategy:
    # A consumer group rebalances on every membership change: replace pods one at a time, old first.
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 0
      maxUnavailable: 1
  template:
    metadata:
      labels:
        {{- include "fraudstream.labels" . | nindent 8 }}
        {{- with $values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "fraudstream.configChecksum" (dict "root" $root "component" (.configMap | default .component)) }}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "fraudstream.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "fraudstream.podSecurityContextFor" (dict "root" $root "uid" $root.Values.images.consumers.uid) | nindent 8 }}
      # SIGTERM only sets a flag: the consumer finishes its batch, commits and closes within this.
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "fraudstream.image" (dict "root" $root "image" $root.Values.images.consumers) | quote }}
          imagePullPolicy: {{ $root.Values.images.pullPolicy }}
          command: ["fraudstream"]
          args: {{ ternary (list "labels" "consume") (list $command) (eq $command "labels") | toJson }}
          ports:
            - name: metrics
              containerPort: {{ $values.metricsPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "fraudstream.componentName" (dict "root" $root "component" (.configMap | default .component)) }}
          {{- $database := has $command (list "writer" "labels") }}
          {{- if or $database $values.extraEnv .env }}
          env:
            {{- if $database }}
            {{- include "fraudstream.databaseEnv" $root | nindent 12 }}
            {{- end }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          livenessProbe:
            {{- toYaml $values.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $values.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          securityContext:
            {{- include "fraudstream.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
      {{- include "fraudstream.scheduling" $values | nindent 6 }}
{{- end }}

{{/* Headless Service in front of one consumer's metrics port, for its ServiceMonitor. */}}
{{- define "fraudstream.consumerService" -}}
{{- $values := index .root.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "fraudstream.componentName" . }}
  labels:
    {{- include "fraudstream.labels" . | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "fraudstream.selectorLabels" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $values.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end }}

{{/* Hook Job running one `fraudstream` command with the consumers image (call with dict "root" $ "component" "migrations" "args" (list "migrate") "kafka" false "database" true "weight" "-5"). */}}
{{- define "fraudstream.hookJob" -}}
{{- $root := .root }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "fraudstream.componentName" . }}
  labels:
    {{- include "fraudstream.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ .weight | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ $root.Values.jobs.backoffLimit }}
  activeDeadlineSeconds: {{ $root.Values.jobs.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "fraudstream.labels" . | nindent 8 }}
    spec:
      restartPolicy: Never
      # Pre-install hooks run before the chart's own ServiceAccount exists: use the namespace's
      # default one (no token either way) unless an existing account was named.
      serviceAccountName: {{ if $root.Values.serviceAccount.create }}default{{ else }}{{ include "fraudstream.serviceAccountName" $root }}{{ end }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "fraudstream.podSecurityContextFor" (dict "root" $root "uid" $root.Values.images.consumers.uid) | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "fraudstream.image" (dict "root" $root "image" $root.Values.images.consumers) | quote }}
          imagePullPolicy: {{ $root.Values.images.pullPolicy }}
          command: ["fraudstream"]
          args: {{ toJson .args }}
          # A hook runs before the chart's ConfigMaps exist, so its environment is inline.
          env:
            {{- range $name, $value := include "fraudstream.logEnv" $root | fromYaml }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
            {{- if .kafka }}
            {{- range $name, $value := include "fraudstream.kafkaEnv" $root | fromYaml }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
            {{- end }}
            {{- if .database }}
            {{- include "fraudstream.databaseEnv" $root | nindent 12 }}
            {{- end }}
          resources:
            {{- toYaml $root.Values.jobs.resources | nindent 12 }}
          securityContext:
            {{- include "fraudstream.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end }}
