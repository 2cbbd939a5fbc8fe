{{/* The chart's name, and <fullname>: the release's name, plus the chart's when it lacks it. */}}
{{- define "ss.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ss.fullname" -}}
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

{{/* <fullname>-<component>; call with (list $ "component"). */}}
{{- define "ss.component" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "ss.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component; call with (list $ "component"). */}}
{{- define "ss.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "ss.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "ss.labels" -}}
{{- $root := index . 0 -}}
{{ include "ss.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: serverless-scaling
{{- end }}

{{/* metadata of an object of one component; call with (list $ "component"). */}}
{{- define "ss.metadata" -}}
name: {{ include "ss.component" . }}
namespace: {{ (index . 0).Release.Namespace }}
labels:
  {{- include "ss.labels" . | nindent 2 }}
{{- end }}

{{- define "ss.secretName" -}}
{{- .Values.secret.existingSecret | default (include "ss.component" (list . "secrets")) }}
{{- end }}

{{- define "ss.appImage" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Host names the services answer (ALLOWED_HOSTS): loopback for the probes, every Service of
the chart by each of its DNS names, the Ingress host and extraAllowedHosts. */}}
{{- define "ss.allowedHosts" -}}
{{- $hosts := list "localhost" "127.0.0.1" "[::1]" "::1" }}
{{- range list "api-gateway" "worker-service" "monitoring" "autoscaler" }}
{{- $service := include "ss.component" (list $ .) }}
{{- $namespaced := printf "%s.%s" $service $.Release.Namespace }}
{{- $hosts = concat $hosts (list $service $namespaced (printf "%s.svc" $namespaced) (printf "%s.svc.%s" $namespaced $.Values.clusterDomain)) }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- $hosts = append $hosts .Values.ingress.host }}
{{- end }}
{{- concat $hosts .Values.extraAllowedHosts | uniq | join "," }}
{{- end }}

{{- define "ss.redisUrl" -}}
{{- if .Values.redis.bundled }}
{{- printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "ss.component" (list . "redis")) }}
{{- else }}
{{- required "redis.external.url is required when redis.bundled is false" .Values.redis.external.url }}
{{- end }}
{{- end }}

{{- define "ss.databaseUrl" -}}
{{- if .Values.postgres.bundled }}
{{- printf "postgresql://serverless:$(POSTGRES_PASSWORD)@%s:5432/serverless" (include "ss.component" (list . "postgres")) }}
{{- else }}
{{- required "postgres.external.url is required when postgres.bundled is false" .Values.postgres.external.url }}
{{- end }}
{{- end }}

{{/* A variable read from the chart's Secret; call with (list $ "NAME"). */}}
{{- define "ss.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "ss.secretName" (index . 0) }}
      key: {{ index . 1 }}
{{- end }}

{{/* The environment every Python service shares, besides the ConfigMap. The passwords come first:
Kubernetes expands $(REDIS_PASSWORD) and $(POSTGRES_PASSWORD) in the URLs after them, so the URLs
hold no secret of their own. */}}
{{- define "ss.appEnv" -}}
{{ include "ss.secretEnv" (list . "REDIS_PASSWORD") }}
{{ include "ss.secretEnv" (list . "POSTGRES_PASSWORD") }}
{{ include "ss.secretEnv" (list . "ADMIN_TOKEN") }}
- name: REDIS_URL
  value: {{ include "ss.redisUrl" . | quote }}
- name: DATABASE_URL
  value: {{ include "ss.databaseUrl" . | quote }}
{{- end }}

{{/* A probe on one of the service's health endpoints, the one its Compose healthcheck reads.
Host: localhost, since the services answer only the names in ALLOWED_HOSTS (the kubelet would send
the pod's IP). Compose's rhythm: every 5 s, 3 s timeout, 10 failures. */}}
{{- define "ss.httpProbe" -}}
httpGet:
  path: {{ index . 0 }}
  port: http
  httpHeaders:
    - name: Host
      value: localhost
periodSeconds: 5
timeoutSeconds: 3
failureThreshold: 10
{{- end }}

{{- define "ss.execProbe" -}}
exec:
  command: {{ toJson . }}
periodSeconds: 5
timeoutSeconds: 3
failureThreshold: 10
{{- end }}

{{/* One Python service's Deployment. Call with a dict:
  root       the chart's context ($)
  component  docker-compose.yml's service name
  values     its block of values (resources; replicas when `replicas` is true)
  replicas   whether the Deployment names a count (false when KEDA or the autoscaler owns it)
  module     what `python -m` runs
  port       the port it serves
  health     its health endpoint
  env        its own variables, a list of {name, value} or {name, valueFrom}
  pod        more of the pod's spec (YAML text), may be empty
  strategy   the Deployment's strategy (a dict), may be empty
  account    the ServiceAccount to run as, and `api` whether its token is mounted: only the
             autoscaler that scales through the Kubernetes API has one; no other pod gets a token
*/}}
{{- define "ss.appDeployment" -}}
{{- $root := .root }}
{{- $ctx := list $root .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "ss.metadata" $ctx | nindent 2 }}
spec:
  {{- if .replicas }}
  replicas: {{ .values.replicas }}
  {{- end }}
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ss.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ss.labels" $ctx | nindent 8 }}
      annotations:
        # A changed ConfigMap rolls the pods: they read it only at start.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      {{- with .account }}
      serviceAccountName: {{ . }}
      {{- end }}
      automountServiceAccountToken: {{ .api | default false }}
      {{- with .pod }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
      # The migrate step of docker-compose.yml (`python -m core.migrate`: waits for PostgreSQL with
      # a deadline, applies the schema under an advisory lock), before every Python service, so
      # none runs on a missing schema; concurrent runs wait for each other and apply it once.
      initContainers:
        - name: migrate
          image: {{ include "ss.appImage" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "-m", "core.migrate"]
          envFrom:
            - configMapRef:
                name: {{ include "ss.component" (list $root "config") }}
          env:
            {{- include "ss.appEnv" $root | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
      containers:
        - name: {{ .component }}
          image: {{ include "ss.appImage" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "-m", {{ .module | quote }}]
          ports:
            - name: http
              containerPort: {{ .port }}
          envFrom:
            - configMapRef:
                name: {{ include "ss.component" (list $root "config") }}
          env:
            {{- include "ss.appEnv" $root | nindent 12 }}
            - name: PORT
              value: {{ .port | quote }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          readinessProbe:
            {{- include "ss.httpProbe" (list .health) | nindent 12 }}
          livenessProbe:
            {{- include "ss.httpProbe" (list .health) | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
{{- end }}

{{/* A ClusterIP Service for one component; call with (list $ "component" port). */}}
{{- define "ss.service" -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "ss.metadata" (list (index . 0) (index . 1)) | nindent 2 }}
spec:
  type: ClusterIP
  selector:
    {{- include "ss.selectorLabels" (list (index . 0) (index . 1)) | nindent 4 }}
  ports:
    - name: {{ index . 1 }}
      port: {{ index . 2 }}
      targetPort: {{ index . 2 }}
{{- end }}

{{/* A PodDisruptionBudget for one component; call with (list $ "component" budget), budget being
{minAvailable: n} or {maxUnavailable: n}. */}}
{{- define "ss.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "ss.metadata" (list (index . 0) (index . 1)) | nindent 2 }}
spec:
  {{- toYaml (index . 2) | nindent 2 }}
  selector:
    matchLabels:
      {{- include "ss.selectorLabels" (list (index . 0) (index . 1)) | nindent 6 }}
{{- end }}

{{/* A bundled store (Redis or PostgreSQL): one replica with its own volume. Call with a dict:
  root, component, values (image, storage, resources), port, mount (the data folder),
  container (the container's args, env and probes, YAML text). */}}
{{- define "ss.storeStatefulSet" -}}
{{- $ctx := list .root .component }}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  {{- include "ss.metadata" $ctx | nindent 2 }}
spec:
  serviceName: {{ include "ss.component" $ctx }}
  replicas: 1
  selector:
    matchLabels:
      {{- include "ss.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ss.labels" $ctx | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: {{ .component }}
          image: {{ printf "%s:%s" .values.image.repository .values.image.tag }}
          ports:
            - name: {{ .component }}
              containerPort: {{ .port }}
          {{- .container | nindent 10 }}
          volumeMounts:
            - name: data
              mountPath: {{ .mount }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: [ReadWriteOnce]
        {{- with .values.storage.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ .values.storage.size }}
{{- end }}
