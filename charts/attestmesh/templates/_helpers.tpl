{{/* The chart name. */}}
{{- define "attestmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object name prefix. */}}
{{- define "attestmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "attestmesh.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "attestmesh.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "attestmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "attestmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: attestmesh
{{- end }}

{{/* Labels that select the control-plane pod. */}}
{{- define "attestmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "attestmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controlplane
{{- end }}

{{/* The attestmesh image. */}}
{{- define "attestmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The service account name. */}}
{{- define "attestmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "attestmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* How workloads reach the control plane: the Service's cluster DNS name, or its fixed
ClusterIP (service.clusterIP) in a cluster without DNS. */}}
{{- define "attestmesh.host" -}}
{{- if .Values.service.clusterIP }}
{{- .Values.service.clusterIP }}
{{- else }}
{{- printf "%s.%s.svc" (include "attestmesh.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* How injected pods reach the attestation API. */}}
{{- define "attestmesh.attestAddr" -}}
{{- default (printf "%s:%d" (include "attestmesh.host" .) (int .Values.ports.attestation)) .Values.webhook.attestAddr }}
{{- end }}

{{/* How injected pods reach the LAS: the control plane in simulation, the per-node service otherwise. */}}
{{- define "attestmesh.lasAddr" -}}
{{- if .Values.simulation.enabled }}
{{- printf "%s:%d" (include "attestmesh.host" .) (int .Values.ports.las) }}
{{- else }}
{{- .Values.hardware.lasAddr }}
{{- end }}
{{- end }}

{{/* The MutatingWebhookConfiguration's name (cluster-scoped: unique per release). */}}
{{- define "attestmesh.webhookName" -}}
{{- printf "%s-%s-injector" .Release.Namespace (include "attestmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the control plane patches its own webhook's caBundle. */}}
{{- define "attestmesh.patchCABundle" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.caBundle) (not .Values.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* The Secret holding the store key. */}}
{{- define "attestmesh.storeKeySecret" -}}
{{- default (printf "%s-store-key" (include "attestmesh.fullname" .)) .Values.store.key.existingSecret }}
{{- end }}

{{/* The Secret holding the store's generation (its rollback anchor). */}}
{{- define "attestmesh.storeAnchorSecret" -}}
{{- printf "%s-store-generation" (include "attestmesh.fullname" .) }}
{{- end }}

{{/* "true" when the control plane talks to the API server: its webhook's caBundle, its store's anchor. */}}
{{- define "attestmesh.usesAPI" -}}
{{- if or (include "attestmesh.patchCABundle" .) .Values.store.anchor.enabled .Values.rbac.create }}true{{ end }}
{{- end }}

{{/* The Secret with the webhook's serving certificate, if any. */}}
{{- define "attestmesh.webhookTLSSecret" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-webhook-tls" (include "attestmesh.fullname" .) }}
{{- else }}
{{- .Values.webhook.tlsSecret }}
{{- end }}
{{- end }}

{{/* The ClusterRole (and binding) that lets the control plane follow pods and EndpointSlices. */}}
{{- define "attestmesh.endpointsRole" -}}
{{- printf "%s-%s-endpoints" .Release.Namespace (include "attestmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the store is in etcd (several replicas may share it). */}}
{{- define "attestmesh.etcd" -}}
{{- if or .Values.store.etcd.endpoints .Values.store.etcd.bundled.enabled }}true{{ end }}
{{- end }}

{{/* The bundled etcd's name (StatefulSet and its headless Service). */}}
{{- define "attestmesh.etcdName" -}}
{{- printf "%s-etcd" (include "attestmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on the bundled etcd's objects. */}}
{{- define "attestmesh.etcdLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "attestmesh.etcdSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: attestmesh
{{- end }}

{{/* Labels that select the bundled etcd's pods. */}}
{{- define "attestmesh.etcdSelectorLabels" -}}
app.kubernetes.io/name: {{ include "attestmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{/* The Secret with the etcd client's certificate, key and CA. */}}
{{- define "attestmesh.etcdTLSSecret" -}}
{{- if .Values.store.etcd.bundled.enabled }}
{{- printf "%s-tls" (include "attestmesh.etcdName" .) }}
{{- else }}
{{- .Values.store.etcd.tlsSecret }}
{{- end }}
{{- end }}

{{/* --store for etcd: etcd://member,member,... */}}
{{- define "attestmesh.etcdStore" -}}
{{- if .Values.store.etcd.bundled.enabled }}
{{- $name := include "attestmesh.etcdName" . }}
{{- $members := list }}
{{- range $i := until (int .Values.store.etcd.bundled.replicas) }}
{{- $members = append $members (printf "%s-%d.%s.%s.svc:2379" $name $i $name $.Release.Namespace) }}
{{- end }}
{{- printf "etcd://%s" (join "," $members) }}
{{- else }}
{{- printf "etcd://%s" (join "," .Values.store.etcd.endpoints) }}
{{- end }}
{{- end }}
