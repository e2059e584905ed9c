# Node auth: one AppRole role per node (its name picks the node's PKI role through the node
# policy's template), and optionally TLS-certificate auth with the node's own certificate.

resource "vault_auth_backend" "approle" {
  count = var.approle.create_backend ? 1 : 0
  type  = "approle"
  path  = var.approle.path
}

data "vault_auth_backend" "approle" {
  count = var.approle.create_backend ? 0 : 1
  path  = var.approle.path
}

locals {
  approle_accessor = var.approle.create_backend ? vault_auth_backend.approle[0].accessor : data.vault_auth_backend.approle[0].accessor
}

resource "vault_approle_auth_backend_role" "node" {
  for_each                = var.nodes
  backend                 = var.approle.path
  role_name               = each.key
  token_policies          = [vault_policy.policy["crdb-node"].name]
  token_no_default_policy = true
  token_ttl               = var.approle.token_ttl
  token_max_ttl           = var.approle.token_max_ttl
  token_bound_cidrs       = lookup(var.approle.token_bound_cidrs, each.key, [])
  secret_id_ttl           = var.approle.secret_id_ttl
  secret_id_num_uses      = var.approle.secret_id_num_uses
  secret_id_bound_cidrs   = lookup(var.approle.token_bound_cidrs, each.key, [])
  depends_on              = [vault_auth_backend.approle]
}

resource "vault_auth_backend" "cert" {
  count = var.cert_auth.enabled && var.cert_auth.create_backend ? 1 : 0
  type  = "cert"
  path  = var.cert_auth.path
}

# Names cannot tell nodes apart: every node certificate has CN=node, nodes share names (localhost, a
# load balancer) and an IP-only node has none, and cert auth accepts a login when any one name
# matches. So each node's login is bound to the subject OU that only its own PKI role sets (Vault
# takes the OU from the role, never from the CSR): n2's node.crt can never log in as node-n1.
resource "vault_cert_auth_backend_role" "node" {
  for_each                     = var.cert_auth.enabled ? var.nodes : {}
  backend                      = var.cert_auth.path
  name                         = "node-${each.key}"
  certificate                  = local.signed["node"] # the node intermediate and its chain
  allowed_common_names         = local.definitions.cert_auth.allowed_common_names
  allowed_organizational_units = local.role_args["node-${each.key}"].ou
  token_no_default_policy      = local.definitions.cert_auth.token_no_default_policy # the node policy has all it needs
  token_policies               = [vault_policy.node_static[each.key].name]
  token_ttl                    = var.approle.token_ttl
  token_max_ttl                = var.approle.token_max_ttl
  depends_on                   = [vault_auth_backend.cert]
}

# JWT auth per node: a pod logs in with the projected service-account token the kubelet gives it (or any
# JWT that names the pod). Every pod of a StatefulSet runs as the same service account, so the token's
# subject names no pod; the kube-apiserver puts the pod's own name into every token it signs
# (kubernetes.io.pod.name), and each node's role requires exactly that name ("string", never a glob):
# cockroachdb-1's token can never log in as node-cockroachdb-0. The embedded provisioner makes the same
# roles (vaultpki/dev/jwt_auth.py; tests/terraform/test_jwt_auth.py compares them).
resource "vault_jwt_auth_backend" "jwt" {
  count                  = var.jwt_auth.enabled && var.jwt_auth.create_backend ? 1 : 0
  type                   = "jwt"
  path                   = var.jwt_auth.path
  jwt_validation_pubkeys = length(var.jwt_auth.validation_pubkeys) > 0 ? var.jwt_auth.validation_pubkeys : null
  oidc_discovery_url     = var.jwt_auth.oidc_discovery_url
  oidc_discovery_ca_pem  = var.jwt_auth.oidc_discovery_ca_pem
  jwks_url               = var.jwt_auth.jwks_url
  bound_issuer           = var.jwt_auth.bound_issuer
}

resource "vault_jwt_auth_backend_role" "node" {
  for_each          = var.jwt_auth.enabled ? var.nodes : {}
  backend           = var.jwt_auth.path
  role_name         = "node-${each.key}"
  role_type         = "jwt"
  user_claim        = "sub"
  bound_audiences   = var.jwt_auth.bound_audiences
  bound_subject     = var.jwt_auth.bound_subject
  bound_claims_type = "string"
  bound_claims      = { (var.jwt_auth.node_claim) = lookup(var.jwt_auth.claim_values, each.key, each.key) }
  # The pod's name in the token's metadata (and the audit log): the subject is the same for every pod.
  claim_mappings          = { (var.jwt_auth.node_claim) = "pod" }
  token_policies          = [vault_policy.node_static[each.key].name]
  token_no_default_policy = true # the node policy has all it needs
  token_ttl               = var.jwt_auth.token_ttl
  token_max_ttl           = var.jwt_auth.token_max_ttl
  depends_on              = [vault_jwt_auth_backend.jwt]
}
