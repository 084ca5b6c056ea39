{{/* Names, labels and the shared pieces of every service's pod. */}}

{{- define "pa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "pa.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pa.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels shared by every object; the NetworkPolicies select the mesh by them. */}}
{{- define "pa.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "pa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: personal-agent
{{- end -}}

{{/* (dict "root" $ "component" "runs") */}}
{{- define "pa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pa.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "binary" "svc-runs") */}}
{{- define "pa.image" -}}
{{ .root.Values.image.repository }}/{{ .binary }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* The values env of a service: `env` overridden by `services.<name>.env`, then extraEnv. */}}
{{- define "pa.env" -}}
{{- $svc := index .root.Values.services .component -}}
{{- $env := merge (deepCopy ($svc.env | default dict)) .root.Values.env -}}
{{- range $name, $value := $env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $svc.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* REDIS_URL: yours, or the bundled Redis with the password from the Secret (the templates
set REDIS_PASSWORD first; Kubernetes expands $(REDIS_PASSWORD), so the password never sits in a
manifest). */}}
{{- define "pa.redisUrl" -}}
{{- if .Values.externalRedis.url -}}
{{- .Values.externalRedis.url -}}
{{- else -}}
{{- printf "redis://:$(REDIS_PASSWORD)@%s-redis-master:6379" .Release.Name -}}
{{- end -}}
{{- end -}}

{{- define "pa.temporalAddress" -}}
{{- if .Values.temporal.enabled -}}
{{- printf "%s-temporal-frontend:7233" .Release.Name -}}
{{- else -}}
{{- .Values.temporal.address -}}
{{- end -}}
{{- end -}}

{{/* In-cluster URL of a service's gRPC port, (dict "root" $ "component" "runs" "port" 50051):
its headless Service, whose DNS name answers every ready replica, so the mesh's clients balance
over the replicas and drop a dead one (ADR 0191); a ClusterIP would pin each client's HTTP/2
connection to one replica. */}}
{{- define "pa.url" -}}
{{- printf "http://%s-%s-headless:%v" (include "pa.fullname" .root) .component .port -}}
{{- end -}}

{{/* The headless Service behind pa.url: (dict "root" $ "component" "runs" "port" 50051). A
separate object beside the ClusterIP Service, because clusterIP cannot change on upgrade. */}}
{{- define "pa.headlessService" -}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "pa.fullname" .root }}-{{ .component }}-headless
  labels:
    {{- include "pa.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  clusterIP: None
  selector:
    {{- include "pa.selectorLabels" (dict "root" .root "component" .component) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .port }}
      targetPort: grpc
      protocol: TCP
{{- end -}}
