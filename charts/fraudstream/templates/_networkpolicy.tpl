{{/* Egress rule list entry allowing DNS lookups (kube-dns / CoreDNS in any namespace). */}}
{{- define "fraudstream.egressDns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
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
