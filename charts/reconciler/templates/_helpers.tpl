{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "reconciler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "reconciler.fullname" -}}
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

{{- define "reconciler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: selector labels never change after the first install (they are immutable). */}}
{{- define "reconciler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reconciler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "reconciler.labels" -}}
helm.sh/chart: {{ include "reconciler.chart" . }}
{{ include "reconciler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reconciler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The scheduler pods (the Deployment); the Job and the test pod use other components. */}}
{{- define "reconciler.podSelectorLabels" -}}
{{ include "reconciler.selectorLabels" . }}
app.kubernetes.io/component: scheduler
{{- end }}

{{- define "reconciler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reconciler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "reconciler.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "reconciler.gitSyncImage" -}}
{{- printf "%s:%s" .Values.manifests.gitSync.image.repository .Values.manifests.gitSync.image.tag }}
{{- end }}

{{/* Paths shared with the Dockerfile (tests/helm/test_image_contract.py keeps them equal). */}}
{{- define "reconciler.stateDir" -}}/var/lib/reconciler{{- end }}
{{- define "reconciler.apiTokenDir" -}}/etc/reconciler/api-token{{- end }}

{{/* The manifests source in effect: manifests.source, or when it is empty gitSync if
     manifests.gitSync.repo is set and configMap (the example tasks) otherwise. */}}
{{- define "reconciler.manifestsSource" -}}
{{- if .Values.manifests.source }}
{{- .Values.manifests.source }}
{{- else if .Values.manifests.gitSync.repo }}
{{- "gitSync" }}
{{- else }}
{{- "configMap" }}
{{- end }}
{{- end }}

{{/* The directory given to --manifests. */}}
{{- define "reconciler.manifestsDir" -}}
{{- if eq (include "reconciler.manifestsSource" .) "gitSync" }}
{{- $g := .Values.manifests.gitSync }}
{{- $base := printf "%s/%s" (trimSuffix "/" $g.root) $g.link }}
{{- if $g.subPath }}
{{- printf "%s/%s" $base (trimAll "/" $g.subPath) }}
{{- else }}
{{- $base }}
{{- end }}
{{- else }}
{{- .Values.manifests.mountPath }}
{{- end }}
{{- end }}

{{- define "reconciler.manifestsConfigMapName" -}}
{{- if eq (include "reconciler.manifestsSource" .) "existingConfigMap" }}
{{- .Values.manifests.existingConfigMap.name }}
{{- else }}
{{- printf "%s-manifests" (include "reconciler.fullname" .) }}
{{- end }}
{{- end }}

{{/* Database ------------------------------------------------------------------------- */}}

{{- define "reconciler.externalDatabase" -}}
{{- if eq .Values.database.type "external" }}true{{ end }}
{{- end }}

{{- define "reconciler.databaseSecretName" -}}
{{- default (printf "%s-database" (include "reconciler.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{- define "reconciler.apiTokenSecretName" -}}
{{- default (printf "%s-api-token" (include "reconciler.fullname" .)) .Values.apiToken.existingSecret }}
{{- end }}

{{- define "reconciler.zookeeperNamespace" -}}
{{- default (printf "%s-%s" .Release.Namespace (include "reconciler.fullname" .)) .Values.zookeeper.namespace }}
{{- end }}

{{/* Environment of every container running the reconciler image. */}}
{{- define "reconciler.baseEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- if include "reconciler.externalDatabase" . }}
- name: RECONCILER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "reconciler.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretKey }}
{{- end }}
{{- end }}

{{/* Invalid combinations: fail with a message that says what to change. The schema
     (values.schema.json) rejects most of these too; these checks also hold with
     --skip-schema-validation and for combinations a schema cannot express. */}}
{{- define "reconciler.validate" -}}
{{- $v := .Values }}
{{- $replicas := int $v.replicaCount }}
{{- if lt $replicas 1 }}
{{- fail (printf "replicaCount must be at least 1 (got %d)." $replicas) }}
{{- end }}
{{- if and (gt $replicas 1) (ne $v.database.type "external") }}
{{- fail (printf "replicaCount=%d needs a shared database, but database.type is %q: SQLite is a file that only one replica may use. Set database.type=external with database.url or database.existingSecret (PostgreSQL or MySQL/MariaDB), or set replicaCount=1." $replicas $v.database.type) }}
{{- end }}
{{- if and (gt $replicas 1) (not $v.zookeeper.hosts) }}
{{- fail (printf "replicaCount=%d needs zookeeper.hosts (an existing ZooKeeper ensemble, e.g. \"zk-0.zk:2181,zk-1.zk:2181,zk-2.zk:2181/reconciler\"): replicas claim slots and elect the writer through it. Set zookeeper.hosts, or set replicaCount=1." $replicas) }}
{{- end }}
{{- if not (has $v.database.type (list "sqlite" "external")) }}
{{- fail (printf "database.type must be \"sqlite\" or \"external\" (got %q)." $v.database.type) }}
{{- end }}
{{- if and (eq $v.database.type "external") (not $v.database.url) (not $v.database.existingSecret) }}
{{- fail "database.type=external needs database.url or database.existingSecret (a Secret with the URL under database.existingSecretKey)." }}
{{- end }}
{{- if and (eq $v.database.type "external") $v.database.url (hasPrefix "sqlite" $v.database.url) }}
{{- fail "database.url is a SQLite URL but database.type is external: use database.type=sqlite (one replica) or a PostgreSQL/MySQL URL." }}
{{- end }}
{{- if and (eq $v.database.type "sqlite") (or $v.database.url $v.database.existingSecret) }}
{{- fail "database.url / database.existingSecret are set but database.type is sqlite: set database.type=external to use them." }}
{{- end }}
{{- $sources := list "configMap" "gitSync" "existingConfigMap" "existingClaim" }}
{{- $source := include "reconciler.manifestsSource" . }}
{{- if not (has $source $sources) }}
{{- fail (printf "manifests.source must be one of %s, or empty (got %q)." (join ", " $sources) $source) }}
{{- end }}
{{- if and $v.manifests.gitSync.repo (ne $source "gitSync") }}
{{- fail (printf "manifests.gitSync.repo is set but manifests.source is %s: leave manifests.source empty (or set it to gitSync) to use the repository, or unset manifests.gitSync.repo." $source) }}
{{- end }}
{{- if and (eq $source "gitSync") (not $v.manifests.gitSync.repo) }}
{{- fail "manifests.source=gitSync needs manifests.gitSync.repo (the repository with your task manifests)." }}
{{- end }}
{{- if and (eq $source "gitSync") (ne $v.manifests.gitSync.auth.type "none") (not $v.manifests.gitSync.auth.existingSecret) }}
{{- fail (printf "manifests.gitSync.auth.type=%s needs manifests.gitSync.auth.existingSecret (a Secret with the credentials)." $v.manifests.gitSync.auth.type) }}
{{- end }}
{{- if and (eq $source "existingConfigMap") (not $v.manifests.existingConfigMap.name) }}
{{- fail "manifests.source=existingConfigMap needs manifests.existingConfigMap.name." }}
{{- end }}
{{- if and (eq $source "existingClaim") (not $v.manifests.existingClaim.name) }}
{{- fail "manifests.source=existingClaim needs manifests.existingClaim.name." }}
{{- end }}
{{- if and $v.apiToken.enabled (not $v.apiToken.existingSecret) (not (regexMatch "^[A-Za-z0-9_.@-]+$" $v.apiToken.name)) }}
{{- fail (printf "apiToken.name %q may hold only letters, digits and _ . @ -." $v.apiToken.name) }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts." }}
{{- end }}
{{- end }}
