# The ACL policies, rendered from ../policies/*.hcl.tftpl with templatefile() (the embedded
# provisioner renders the same files; a test compares both renderers).

locals {
  client_mount = local.cas[local.client_ca].path
  approle_role_name_template = (
    "{{identity.entity.aliases.${local.approle_accessor}.metadata.role_name}}"
  )
  policy_vars = merge(
    {
      crdb-node = {
        mount            = var.mounts.node
        client_mount     = local.client_mount
        node_role        = "${local.node_prefix}-${local.approle_role_name_template}"
        client_node_role = var.mode == "standard" ? "" : var.role_names.client_node
        ca_mounts        = distinct([var.mounts.node, local.client_mount])
      }
      crdb-operator      = { client_mount = local.client_mount, user_role = var.role_names.user, mounts = distinct([var.mounts.node, local.client_mount]) }
      crdb-root-operator = { client_mount = local.client_mount, root_role = var.role_names.root }
    },
    var.user_auth_accessor == null ? {} : {
      crdb-user-self = { client_mount = local.client_mount, user_self_role = var.role_names.user_self, ca_mounts = distinct([var.mounts.node, local.client_mount]) }
    },
    var.mounts.ui == null ? {} : {
      crdb-ui = { ui_mount = var.mounts.ui, ui_role = var.role_names.ui }
    },
  )
}

resource "vault_policy" "policy" {
  for_each = local.policy_vars
  name     = each.key
  policy   = templatefile("${local.policies_dir}/${each.key}.hcl.tftpl", each.value)
}

# With cert or jwt auth, a token is bound to one node's role: one static policy per node (never identity
# templates: every node certificate has CN=node, and every pod the same service account, so all nodes
# would share one identity).
resource "vault_policy" "node_static" {
  for_each = var.cert_auth.enabled || var.jwt_auth.enabled ? var.nodes : {}
  name     = "crdb-node-${each.key}"
  policy = templatefile("${local.policies_dir}/crdb-node.hcl.tftpl", merge(local.policy_vars["crdb-node"], {
    node_role = "${local.node_prefix}-${each.key}"
  }))
}
