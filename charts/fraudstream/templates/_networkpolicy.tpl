{{/* Egress rule list entry allowing DNS lookups to networkPolicy.dnsPeers (default: kube-dns / CoreDNS in any namespace; empty: any address on port 53). */}}
{{- define "fraudstream.egressDns" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dnsPeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Egress rule list entry allowing Kafka (its port, optionally only to the configured peers). */}}
{{- define "fraudstream.egressKafka" -}}
- ports:
    - port: {{ .Values.networkPolicy.kafkaPort }}
      protocol: TCP
  {{- with .Values.networkPolicy.kafkaPeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Egress rule list entry allowing PostgreSQL (its port, optionally only to the configured peers). */}}
{{- define "fraudstream.egressDatabase" -}}
- ports:
    - port: {{ .Values.database.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.databasePeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Ingress rule list entry letting the monitoring namespace scrape a named port. */}}
{{- define "fraudstream.ingressMetrics" -}}
- from:
    - namespaceSelector:
        {{- toYaml .root.Values.networkPolicy.metricsNamespaceSelector | nindent 8 }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}

{{/* Pod selector entry (a `from`/`to` peer) of one component of this release (call with dict "root" $ "component" "bridge"). */}}
{{- define "fraudstream.peer" -}}
- podSelector:
    matchLabels:
      {{- include "fraudstream.selectorLabels" . | nindent 6 }}
{{- end }}
