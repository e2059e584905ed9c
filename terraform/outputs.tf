output "mounts" {
  description = "PKI mount path per CA (node, client in split-ca, ui when set)."
  value       = { for k, ca in local.cas : k => vault_mount.ca[k].path }
}

output "role_names" {
  description = "Vault role name per role key (node-<name>, client-node, user, root, user-self, ui)."
  value       = { for k, r in local.roles : k => vault_pki_secret_backend_role.role[k].name }
}

output "role_arguments" {
  description = "Every role's arguments as computed from roles.json (what the tests compare with the embedded provisioner)."
  value       = { for k, r in local.roles : r.name => merge(local.role_args[k], { allowed_domains = lookup(local.role_args[k], "allow_any_name", false) ? [] : r.domains }) }
}

output "ca_chain_pem" {
  description = "Per CA: the installed intermediate (first) and its chain, PEM."
  value       = { for k, pem in local.signed : k => pem if contains(keys(vault_pki_secret_backend_config_issuers.ca), k) }
}

output "csrs" {
  description = "Intermediate CSRs, for the organisation-CA flow (sign them, pass the results as external_signed_certificates)."
  value       = { for k, _ in local.cas : k => vault_pki_secret_backend_intermediate_cert_request.ca[k].csr }
}

output "policies" {
  description = "Names of the policies created."
  value       = concat([for k, _ in local.policy_vars : vault_policy.policy[k].name], [for k, _ in vault_policy.node_static : vault_policy.node_static[k].name])
}

output "approle_roles" {
  description = "AppRole role per node (give each node its role_id and a response-wrapped secret_id)."
  value       = { for k, _ in var.nodes : k => vault_approle_auth_backend_role.node[k].role_name }
}

output "vaultpki_config" {
  description = "The [pki] table of vaultpki's configuration for each node."
  value = {
    for name, _ in var.nodes : name => merge(
      { mount = var.mounts.node, node_role = "${local.node_prefix}-${name}", user_role = var.role_names.user, root_role = var.role_names.root },
      var.mode == "standard" ? {} : { client_node_role = var.role_names.client_node },
      var.mode == "split-ca" ? { client_mount = var.mounts.client } : {},
      var.mounts.ui == null ? {} : { ui_mount = var.mounts.ui, ui_role = var.role_names.ui },
    )
  }
}

output "jwt_roles" {
  description = "jwt auth role per node (vault.jwt_role of its configuration), when jwt_auth is enabled."
  value       = { for k, r in vault_jwt_auth_backend_role.node : k => r.role_name }
}
