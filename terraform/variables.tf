variable "mode" {
  description = "CockroachDB certs-dir layout: standard, split-node or split-ca."
  type        = string
  default     = "standard"
  validation {
    condition     = contains(["standard", "split-node", "split-ca"], var.mode)
    error_message = "mode must be standard, split-node or split-ca."
  }
}

variable "mounts" {
  description = "PKI mount paths: node (ca.crt, node.crt, and client certs unless split-ca), client (split-ca only), ui (optional)."
  type = object({
    node   = optional(string, "pki-crdb")
    client = optional(string, "pki-crdb-client")
    ui     = optional(string)
  })
  default = {}
  validation {
    condition     = alltrue([for p in compact(values(var.mounts)) : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]*$", p))])
    error_message = "mount paths are single path segments (letters, digits, _ . -)."
  }
}

variable "root_mount" {
  description = "An existing Vault PKI mount whose issuer signs the intermediates. Null: they are signed by an external (organisation) CA, see external_signed_certificates."
  type        = string
  default     = null
}

variable "root_issuer_ref" {
  description = "Issuer in root_mount that signs the intermediates."
  type        = string
  default     = "default"
}

variable "external_signed_certificates" {
  description = "Organisation-CA flow: CA key (node, client, ui) -> PEM bundle of the signed intermediate (leaf first, then its chain). Apply once to get the CSRs (output csrs), have them signed, then set this."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.external_signed_certificates) : contains(["node", "client", "ui"], k)])
    error_message = "external_signed_certificates keys are node, client and ui."
  }
}

variable "ca_common_names" {
  description = "Subject CN of each intermediate CA."
  type = object({
    node   = optional(string, "CockroachDB node CA")
    client = optional(string, "CockroachDB client CA")
    ui     = optional(string, "CockroachDB DB Console CA")
  })
  default = {}
}

variable "intermediate_ttl" {
  description = "Lifetime of the intermediates (when root_mount signs them)."
  type        = string
  default     = "43800h"
}

variable "ca_max_lease_ttl_seconds" {
  description = "Max lease TTL of the PKI mounts: no certificate they issue lives longer."
  type        = number
  default     = 315360000
  validation {
    condition     = var.ca_max_lease_ttl_seconds >= 86400
    error_message = "ca_max_lease_ttl_seconds must be at least a day."
  }
}

variable "aia_base_url" {
  description = "Vault's address as clients reach it, for the AIA (issuing CA), CRL and OCSP URLs put into every certificate, e.g. https://vault.internal:8200."
  type        = string
  validation {
    condition     = can(regex("^https?://[^/\\s]+$", var.aia_base_url))
    error_message = "aia_base_url is scheme://host[:port] without a path."
  }
}

variable "nodes" {
  description = "One entry per CockroachDB node: name -> every DNS name and IP that reaches it. Each node gets its own PKI role (node-<name>) and AppRole role (<name>)."
  type = map(object({
    hosts = list(string)
  }))
  validation {
    condition     = length(var.nodes) > 0 && alltrue([for name, n in var.nodes : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", name)) && length(n.hosts) > 0])
    error_message = "nodes: at least one; names are lower-case DNS labels; every node has at least one host."
  }
}

variable "ui_hosts" {
  description = "DB Console names (when mounts.ui is set)."
  type        = list(string)
  default     = []
}

variable "role_names" {
  description = "Names of the shared roles (node roles are <node_prefix>-<node name>)."
  type = object({
    node_prefix = optional(string)
    client_node = optional(string, "client-node")
    user        = optional(string, "user")
    root        = optional(string, "root")
    user_self   = optional(string, "user-self")
    ui          = optional(string, "ui")
  })
  default = {}
}

variable "user_auth_accessor" {
  description = "Accessor of the auth mount users log in with (userpass, OIDC...). When set, the self-service role and policy are created: a user can get a certificate for their own login name only."
  type        = string
  default     = null
}

# A node logs in more than once with the same secret-id: the systemd unit's ExecStartPre (sync --once)
# and ExecStart (sync), the Kubernetes init container and sidecar, every restart, and the daemon again
# whenever its token reaches token_max_ttl. A secret-id with a use count or a lifetime therefore ends
# every deployment after a few logins or at its TTL: the defaults are unlimited uses and no expiry.
# What protects it instead: delivered response-wrapped, bound to the node's address
# (token_bound_cidrs also binds the secret-id), rotated by issuing a new one before destroying the old
# (see docs/security.md, "Node credentials: AppRole secret-ids").
variable "approle" {
  description = "AppRole auth for nodes: one role per node, bound to the node policy. secret_id_num_uses and secret_id_ttl default to 0 (unlimited, no expiry): a node logs in again with the same secret-id (two processes, restarts, token_max_ttl); rotate secret-ids instead."
  type = object({
    path               = optional(string, "approle")
    create_backend     = optional(bool, true)
    secret_id_ttl      = optional(number, 0)
    secret_id_num_uses = optional(number, 0)
    token_ttl          = optional(number, 3600)
    token_max_ttl      = optional(number, 86400)
    token_bound_cidrs  = optional(map(list(string)), {})
  })
  default = {}
}

variable "cert_auth" {
  description = "Optional TLS-certificate auth per node (standard mode: node.crt carries clientAuth): once a node has its certificate it renews by logging in with it. One static policy per node."
  type = object({
    enabled        = optional(bool, false)
    path           = optional(string, "cert")
    create_backend = optional(bool, true)
  })
  default = {}
  validation {
    condition     = !var.cert_auth.enabled || var.mode == "standard"
    error_message = "cert_auth needs mode = standard: in split layouts node.crt is a server certificate and client.node.crt names no node."
  }
}

variable "roles_file" {
  description = "The shared role definitions (also read by vaultpki's embedded provisioner)."
  type        = string
  default     = null
}

variable "policies_dir" {
  description = "Directory of the *.hcl.tftpl policy templates."
  type        = string
  default     = null
}

# A projected service-account token is valid for about an hour and replaced by the kubelet before it
# expires; vaultpki reads it at every login. Kubernetes auth (TokenReview) cannot tell one pod of a
# StatefulSet from another, which is why the module binds nodes through jwt auth instead (docs/vault-setup.md).
variable "jwt_auth" {
  description = "Optional JWT auth per node: each pod logs in with its projected service-account token (or any JWT naming it) as its own node. One role per node, node-<name>, requiring node_claim (the pod's name) to equal the node's name (or claim_values[node]), with the node's static policy."
  type = object({
    enabled               = optional(bool, false)
    path                  = optional(string, "jwt")
    create_backend        = optional(bool, true)
    validation_pubkeys    = optional(list(string), []) # the kube-apiserver's service-account public keys, PEM
    oidc_discovery_url    = optional(string)           # or the cluster's issuer, when it serves OIDC discovery
    oidc_discovery_ca_pem = optional(string)
    jwks_url              = optional(string) # or its JWKS
    bound_issuer          = optional(string) # the tokens' iss: the cluster's --service-account-issuer
    bound_audiences       = optional(list(string), ["vault"])
    bound_subject         = optional(string) # system:serviceaccount:<namespace>:<service account>
    node_claim            = optional(string, "/kubernetes.io/pod/name")
    claim_values          = optional(map(string), {})
    token_ttl             = optional(number, 3600)
    token_max_ttl         = optional(number, 86400)
  })
  default = {}
  validation {
    condition = !var.jwt_auth.enabled || !var.jwt_auth.create_backend || (
      (length(var.jwt_auth.validation_pubkeys) > 0 ? 1 : 0) + (var.jwt_auth.oidc_discovery_url == null ? 0 : 1) + (var.jwt_auth.jwks_url == null ? 0 : 1)
    ) == 1
    error_message = "jwt_auth: the backend needs exactly one source of signing keys: validation_pubkeys, oidc_discovery_url or jwks_url."
  }
  validation {
    condition     = length(var.jwt_auth.bound_audiences) > 0 && startswith(var.jwt_auth.node_claim, "/")
    error_message = "jwt_auth: bound_audiences must name the audience the tokens are made for, and node_claim is a JSON pointer (/kubernetes.io/pod/name)."
  }
}
