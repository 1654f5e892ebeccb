{{/* Deployment of one scorer: the champion (dict "root" $ "component" "scorer" "values" .Values.scorer) or the challenger (component "challenger", values: the scorer's with the challenger's replicas and resources, autoscaling off). Its MODEL_TAG comes from the component's own ConfigMap. */}}
{{- define "fraudstream.scorerDeployment" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fraudstream.componentName" . }}
  labels:
    {{- include "fraudstream.labels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "fraudstream.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "fraudstream.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "fraudstream.configChecksum" (dict "root" $root "component" .component) }}
        {{- with $v.podAnnotations }}
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
        {{- include "fraudstream.podSecurityContextFor" (dict "root" $root "uid" $root.Values.images.scorer.uid) | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: scorer
          image: {{ include "fraudstream.image" (dict "root" $root "image" $root.Values.images.scorer) | quote }}
          imagePullPolicy: {{ $root.Values.images.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.service.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "fraudstream.componentName" . }}
          env:
            # BentoML keeps its home (Prometheus multiprocess files, temp files) here: the root
            # filesystem is read-only, /tmp is an emptyDir.
            - name: BENTOML_HOME
              value: /tmp/bentoml
            # libraries that keep caches under HOME find a writable one
            - name: HOME
              value: /tmp
            # no usage analytics sent to BentoML from the cluster
            - name: BENTOML_DO_NOT_TRACK
              value: "True"
            {{- include "fraudstream.cardKeyEnv" $root | nindent 12 }}
            {{- if $v.useDatabase }}
            {{- include "fraudstream.databaseEnv" $root | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- if $v.preStopSeconds }}
          lifecycle:
            # Keep serving while the endpoint removal reaches every node; only then SIGTERM.
            preStop:
              exec:
                command: ["sleep", {{ $v.preStopSeconds | int | toString | quote }}]
          {{- end }}
          {{- with $v.startupProbe }}
          startupProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          livenessProbe:
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $v.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "fraudstream.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and $root.Values.retrain.enabled (eq .component "scorer") }}
            # the champion promoted by the retrain CronJob (CHAMPION_HOME), read at start
            - name: models
              mountPath: /models
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 1Gi
        {{- if and $root.Values.retrain.enabled (eq .component "scorer") }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ include "fraudstream.modelsClaim" $root }}
            readOnly: true
        {{- end }}
      {{- include "fraudstream.scheduling" $v | nindent 6 }}
{{- end }}

{{/* Scorer settings shared by the champion's and the challenger's ConfigMaps (all but MODEL_TAG). */}}
{{- define "fraudstream.scorerEnv" -}}
{{- if ne (toString .Values.scorer.threshold) "" }}
THRESHOLD: {{ .Values.scorer.threshold | quote }}
{{- end }}
MAX_BATCH_SIZE: {{ .Values.scorer.maxBatchSize | quote }}
ADAPTIVE_MAX_BATCH_SIZE: {{ .Values.scorer.adaptiveMaxBatchSize | quote }}
ADAPTIVE_MAX_LATENCY_MS: {{ .Values.scorer.adaptiveMaxLatencyMs | quote }}
WORKERS: {{ .Values.scorer.workers | quote }}
PORT: {{ .Values.scorer.service.port | quote }}
{{- end }}
