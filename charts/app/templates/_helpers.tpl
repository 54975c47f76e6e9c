{{/* Labels of one mesh service's objects; call with (list $ $name). */}}
{{- define "app.labels" -}}
{{- $root := index . 0 }}{{ $name := index . 1 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: {{ $root.Chart.Name }}
{{ include "app.selectorLabels" . }}
{{- end }}

{{/* Labels that select one mesh service's pods; call with (list $ $name). */}}
{{- define "app.selectorLabels" -}}
{{- $root := index . 0 }}{{ $name := index . 1 -}}
app.kubernetes.io/name: {{ $name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end }}
