# One Vault role per certs-dir file kind, from the shared definitions in roles.json
# (vaultpki's embedded provisioner reads the same file). Node roles are made per node.

locals {
  node_template = var.mode == "standard" ? "node" : "node-server"
  node_prefix   = coalesce(var.role_names.node_prefix, local.node_template)
  is_ip         = { for name, n in var.nodes : name => [for h in n.hosts : can(regex("^[0-9.]+$|:", h))] }

  roles = merge(
    {
      for name, n in var.nodes : "node-${name}" => {
        ca       = "node"
        template = local.node_template
        name     = "${local.node_prefix}-${name}"
        # standard: CN=node plus the node's names; split layouts: the node's names only.
        domains = concat(var.mode == "standard" ? ["node"] : [],
        [for i, h in n.hosts : lower(h) if !local.is_ip[name][i]])
      }
    },
    var.mode == "standard" ? {} : {
      client-node = { ca = local.client_ca, template = "client-node", name = var.role_names.client_node, domains = ["node"] }
    },
    {
      user = { ca = local.client_ca, template = "user", name = var.role_names.user, domains = [] }
      root = { ca = local.client_ca, template = "root", name = var.role_names.root, domains = ["root"] }
    },
    var.user_auth_accessor == null ? {} : {
      user-self = {
        ca      = local.client_ca, template = "user-self", name = var.role_names.user_self,
        domains = ["{{identity.entity.aliases.${var.user_auth_accessor}.name}}"]
      }
    },
    var.mounts.ui == null ? {} : {
      ui = { ca = "ui", template = "ui", name = var.role_names.ui, domains = [for h in var.ui_hosts : lower(h) if !can(regex("^[0-9.]+$|:", h))] }
    },
  )
  # Every argument of every role: the common block, then the role's own (keys starting with "_" are notes).
  role_args = {
    for k, r in local.roles : k => merge({
      for field, value in merge(local.definitions.common, local.definitions.roles[r.template]) : field => value
      if !startswith(field, "_") && field != "ou"
      }, {
      # The node's own subject OU ("{node}" is the node's name): what its cert-auth login is bound to (auth.tf).
      for field, value in local.definitions.roles[r.template] : field => [for ou in value : replace(ou, "{node}", trimprefix(k, "node-"))]
      if field == "ou"
      }, {
      # No IP in the role's host list means no IP SAN: with allow_ip_sans on, Vault signs any IP.
      for field in ["allow_ip_sans"] : field => false if length(local.role_ips[k]) == 0
    })
  }
  # The IPs of each role's host list (node-<name>: that node's; ui: the ui hosts'; others: none).
  # HashiCorp Vault cannot pin a role to them (OpenBao's allowed_ip_sans_cidr has no provider argument).
  role_ips = {
    for k, r in local.roles : k => (
      startswith(k, "node-") ? [for i, h in var.nodes[trimprefix(k, "node-")].hosts : h if local.is_ip[trimprefix(k, "node-")][i]]
      : k == "ui" ? [for h in var.ui_hosts : h if can(regex("^[0-9.]+$|:", h))] : []
    )
  }
}

resource "vault_pki_secret_backend_role" "role" {
  for_each = local.roles
  backend  = vault_mount.ca[each.value.ca].path
  name     = each.value.name

  allow_any_name              = lookup(local.role_args[each.key], "allow_any_name", false)
  allowed_domains             = lookup(local.role_args[each.key], "allow_any_name", false) ? [] : each.value.domains
  allowed_domains_template    = lookup(local.role_args[each.key], "allowed_domains_template", false)
  allow_bare_domains          = local.role_args[each.key].allow_bare_domains
  allow_subdomains            = local.role_args[each.key].allow_subdomains
  allow_glob_domains          = local.role_args[each.key].allow_glob_domains
  allow_wildcard_certificates = local.role_args[each.key].allow_wildcard_certificates
  allow_localhost             = local.role_args[each.key].allow_localhost
  allow_ip_sans               = local.role_args[each.key].allow_ip_sans
  ou                          = lookup(local.role_args[each.key], "ou", [])
  allowed_uri_sans            = local.role_args[each.key].allowed_uri_sans
  allowed_other_sans          = local.role_args[each.key].allowed_other_sans
  enforce_hostnames           = local.role_args[each.key].enforce_hostnames
  cn_validations              = local.role_args[each.key].cn_validations
  server_flag                 = local.role_args[each.key].server_flag
  client_flag                 = local.role_args[each.key].client_flag
  use_csr_common_name         = local.role_args[each.key].use_csr_common_name
  use_csr_sans                = local.role_args[each.key].use_csr_sans
  require_cn                  = local.role_args[each.key].require_cn
  key_type                    = local.role_args[each.key].key_type
  key_bits                    = 0 # key_type "any": the CSR decides (the provider would otherwise send 2048, wrong for EC)
  no_store                    = local.role_args[each.key].no_store
  generate_lease              = local.role_args[each.key].generate_lease
  ttl                         = local.role_args[each.key].ttl
  max_ttl                     = local.role_args[each.key].max_ttl

  basic_constraints_valid_for_non_ca = local.role_args[each.key].basic_constraints_valid_for_non_ca
  # Booleans the provider would otherwise send with permissive defaults.
  code_signing_flag     = false
  email_protection_flag = false
}
