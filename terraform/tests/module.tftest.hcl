# Plan-mode tests of the module with a mocked hashicorp/vault provider (run offline by make test
# through the schema-only stand-in in tools/vault-schema-stub). They check what the module
# computes from roles.json and policies/: role arguments, mounts per mode, policy paths.

mock_provider "vault" {
  override_during = plan
  mock_resource "vault_auth_backend" {
    defaults = { accessor = "auth_approle_mock" }
  }
  mock_resource "vault_pki_secret_backend_intermediate_set_signed" {
    defaults = { imported_issuers = ["issuer-mock"] }
  }
  mock_resource "vault_pki_secret_backend_issuer" {
    defaults = { issuer_id = "issuer-id-mock" }
  }
  mock_resource "vault_pki_secret_backend_root_sign_intermediate" {
    defaults = { certificate = "-----BEGIN CERTIFICATE-----\nmock\n-----END CERTIFICATE-----\n" }
  }
}

variables {
  aia_base_url = "https://vault.internal:8200"
  root_mount   = "pki-root"
  nodes = {
    n1 = { hosts = ["n1.db.internal", "10.0.0.1", "localhost", "127.0.0.1"] }
    n2 = { hosts = ["n2.db.internal", "10.0.0.2"] }
  }
}

run "standard" {
  command = plan
  variables {
    mode = "standard"
  }
  assert {
    condition     = toset(keys(vault_pki_secret_backend_role.role)) == toset(["node-n1", "node-n2", "user", "root"])
    error_message = "standard mode makes one node role per node, plus user and root (no client-node, no ui)"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["node-n1"].allowed_domains == tolist(["node", "n1.db.internal", "localhost"])
    error_message = "node-n1 allows CN=node and n1's names only (IPs go through allow_ip_sans)"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["node-n1"].server_flag && vault_pki_secret_backend_role.role["node-n1"].client_flag
    error_message = "the standard node certificate is dual-purpose"
  }
  assert {
    condition     = alltrue([for r in vault_pki_secret_backend_role.role : !r.allow_wildcard_certificates && !r.allow_glob_domains && !r.allow_subdomains])
    error_message = "no role allows wildcards, globs or subdomains"
  }
  assert {
    condition     = alltrue([for r in vault_pki_secret_backend_role.role : r.cn_validations == tolist(["hostname"]) && r.key_bits == 0])
    error_message = "CN validation stays on (never disabled) and key_bits is not the provider's 2048"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["user"].allow_any_name && !vault_pki_secret_backend_role.role["user"].use_csr_common_name && !vault_pki_secret_backend_role.role["user"].use_csr_sans && !vault_pki_secret_backend_role.role["user"].server_flag
    error_message = "the user role takes its CN from the request (so the ACL can police it) and adds no SANs"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["root"].allowed_domains == tolist(["root"]) && !vault_pki_secret_backend_role.role["root"].allow_any_name
    error_message = "the root role can only sign CN=root"
  }
  assert {
    condition     = strcontains(vault_policy.policy["crdb-node"].policy, "path \"pki-crdb/sign/node-{{identity.entity.aliases.auth_approle_mock.metadata.role_name}}\"")
    error_message = "the node policy reaches only the PKI role named after the caller's AppRole role"
  }
  assert {
    condition     = !strcontains(vault_policy.policy["crdb-node"].policy, "client-node")
    error_message = "standard mode has no client-node path in the node policy"
  }
  assert {
    condition     = vault_approle_auth_backend_role.node["n1"].token_policies == toset(["crdb-node"]) && vault_approle_auth_backend_role.node["n1"].token_no_default_policy
    error_message = "each node's AppRole role carries the node policy and nothing else"
  }
  assert {
    condition     = toset(keys(vault_mount.ca)) == toset(["node"])
    error_message = "standard mode has one CA mount"
  }
}

run "split_ca_with_ui_and_self_service" {
  command = plan
  variables {
    mode               = "split-ca"
    mounts             = { node = "pki-crdb", client = "pki-crdb-client", ui = "pki-web" }
    ui_hosts           = ["console.db.internal"]
    user_auth_accessor = "auth_userpass_mock"
  }
  assert {
    condition     = toset(keys(vault_mount.ca)) == toset(["node", "client", "ui"])
    error_message = "split-ca has a node CA, a client CA and here a UI CA"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["client-node"].backend == "pki-crdb-client" && vault_pki_secret_backend_role.role["user"].backend == "pki-crdb-client" && vault_pki_secret_backend_role.role["root"].backend == "pki-crdb-client"
    error_message = "client.node and every user certificate come from the client CA"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["node-n1"].backend == "pki-crdb" && !vault_pki_secret_backend_role.role["node-n1"].client_flag
    error_message = "node.crt comes from the node CA and is a pure server certificate"
  }
  assert {
    condition     = alltrue([for r in vault_pki_secret_backend_role.role : length(r.ou) == 0])
    error_message = "split layouts have no cert auth: no role sets a subject OU"
  }
  assert {
    condition     = vault_pki_secret_backend_role.role["user-self"].allowed_domains == tolist(["{{identity.entity.aliases.auth_userpass_mock.name}}"]) && vault_pki_secret_backend_role.role["user-self"].allowed_domains_template
    error_message = "self-service: a user's only allowed name is their own login"
  }
  assert {
    condition     = strcontains(vault_policy.policy["crdb-node"].policy, "path \"pki-crdb-client/sign/client-node\"")
    error_message = "split-ca nodes sign client.node on the client CA"
  }
  assert {
    condition     = strcontains(vault_policy.policy["crdb-operator"].policy, "path \"pki-crdb/revoke\"") && strcontains(vault_policy.policy["crdb-operator"].policy, "path \"pki-crdb-client/revoke\"")
    error_message = "operators revoke on both CA mounts"
  }
  assert {
    condition     = vault_pki_secret_backend_config_urls.ca["client"].ocsp_servers == tolist(["https://vault.internal:8200/v1/pki-crdb-client/ocsp"])
    error_message = "issued certificates name the client CA's OCSP responder"
  }
  assert {
    condition     = toset(keys(vault_policy.policy)) == toset(["crdb-node", "crdb-operator", "crdb-root-operator", "crdb-user-self", "crdb-ui"])
    error_message = "every policy of the layout is created"
  }
}

run "organisation_ca_flow_waits_for_signed_certificates" {
  command = plan
  variables {
    mode       = "split-node"
    root_mount = null
  }
  assert {
    condition     = length(vault_pki_secret_backend_intermediate_set_signed.ca) == 0 && length(vault_pki_secret_backend_intermediate_cert_request.ca) == 1
    error_message = "without a Vault root, the module first only makes the CSRs"
  }
}

run "cert_auth_static_policies" {
  command = plan
  variables {
    mode      = "standard"
    cert_auth = { enabled = true }
    # Shared names (localhost, a load balancer) and an IP-only node: names cannot tell these apart.
    nodes = {
      n1 = { hosts = ["n1.db.internal", "lb.db.internal", "localhost", "127.0.0.1"] }
      n2 = { hosts = ["n2.db.internal", "lb.db.internal", "localhost", "127.0.0.1"] }
      n3 = { hosts = ["10.0.0.3"] }
    }
  }
  assert {
    condition     = strcontains(vault_policy.node_static["n2"].policy, "path \"pki-crdb/sign/node-n2\"") && !strcontains(vault_policy.node_static["n2"].policy, "{{identity")
    error_message = "cert-auth nodes get a static policy each (never an identity template: CN=node is shared)"
  }
  assert {
    condition     = alltrue([for n in ["n1", "n2", "n3"] : vault_pki_secret_backend_role.role["node-${n}"].ou == tolist(["crdb-node-${n}"])])
    error_message = "each node's PKI role puts that node's own OU into its certificates"
  }
  assert {
    condition     = alltrue([for n in ["n1", "n2", "n3"] : vault_cert_auth_backend_role.node[n].allowed_organizational_units == toset(["crdb-node-${n}"]) && vault_cert_auth_backend_role.node[n].allowed_common_names == toset(["node"])])
    error_message = "each node's cert role accepts only a node certificate carrying that node's own OU (IP-only n3 included)"
  }
  assert {
    condition     = alltrue([for r in vault_cert_auth_backend_role.node : r.allowed_dns_sans == null && r.allowed_names == null && r.token_no_default_policy])
    error_message = "no cert role binds a node by a DNS name (any one shared name would match), and none gets the default policy"
  }
  assert {
    condition     = alltrue([for n in ["n1", "n2", "n3"] : vault_cert_auth_backend_role.node[n].token_policies == toset(["crdb-node-${n}"])])
    error_message = "each node's cert login gets that node's static policy and nothing else"
  }
}

run "bad_mode_is_refused" {
  command = plan
  variables {
    mode = "split"
  }
  expect_failures = [var.mode]
}

run "cert_auth_needs_standard" {
  command = plan
  variables {
    mode      = "split-node"
    cert_auth = { enabled = true }
  }
  expect_failures = [var.cert_auth]
}

run "bad_node_name_is_refused" {
  command = plan
  variables {
    nodes = { "N1/../x" = { hosts = ["n1"] } }
  }
  expect_failures = [var.nodes]
}

run "jwt_auth_per_pod_roles" {
  command = plan
  variables {
    mode = "split-node"
    jwt_auth = {
      enabled            = true
      validation_pubkeys = ["-----BEGIN PUBLIC KEY-----\nmock\n-----END PUBLIC KEY-----\n"]
      bound_issuer       = "https://kubernetes.default.svc.cluster.local"
      bound_subject      = "system:serviceaccount:crdb:cockroachdb"
      claim_values       = { n2 = "cockroachdb-1" }
    }
  }
  assert {
    condition     = vault_jwt_auth_backend_role.node["n1"].bound_claims == tomap({ "/kubernetes.io/pod/name" = "n1" }) && vault_jwt_auth_backend_role.node["n2"].bound_claims == tomap({ "/kubernetes.io/pod/name" = "cockroachdb-1" })
    error_message = "each node's jwt role requires its own pod's name in the token (the node's name unless claim_values says otherwise)"
  }
  assert {
    condition     = alltrue([for r in vault_jwt_auth_backend_role.node : r.bound_claims_type == "string" && r.role_type == "jwt" && r.token_no_default_policy && r.bound_audiences == toset(["vault"]) && r.bound_subject == "system:serviceaccount:crdb:cockroachdb"])
    error_message = "the claim is matched exactly (never a glob), the audience and the service account are bound, and no default policy is handed out"
  }
  assert {
    condition     = alltrue([for n in ["n1", "n2"] : vault_jwt_auth_backend_role.node[n].token_policies == toset(["crdb-node-${n}"]) && vault_jwt_auth_backend_role.node[n].role_name == "node-${n}"])
    error_message = "each node's jwt login gets that node's static policy and nothing else"
  }
  assert {
    condition     = strcontains(vault_policy.node_static["n2"].policy, "path \"pki-crdb/sign/node-server-n2\"") && !strcontains(vault_policy.node_static["n2"].policy, "{{identity")
    error_message = "jwt nodes get a static policy each, naming their own PKI role (split layouts too)"
  }
  assert {
    condition     = length(vault_cert_auth_backend_role.node) == 0 && vault_jwt_auth_backend.jwt[0].path == "jwt"
    error_message = "jwt auth needs no cert auth; the module mounts the jwt backend"
  }
}

run "jwt_auth_needs_one_source_of_keys" {
  command = plan
  variables {
    jwt_auth = { enabled = true }
  }
  expect_failures = [var.jwt_auth]
}
