# CA mounts for CockroachDB certs-dirs: one intermediate CA per mount, signed by a Vault root
# mount or by an organisation CA (CSR out, signed certificate in).

locals {
  roles_file   = coalesce(var.roles_file, "${path.module}/../vaultpki/data/roles.json")
  policies_dir = coalesce(var.policies_dir, "${path.module}/../policies")
  definitions  = jsondecode(file(local.roles_file))

  # Which CA each certs-dir file comes from. split-ca adds a client CA; ui is optional.
  ca_keys = concat(["node"], var.mode == "split-ca" ? ["client"] : [], var.mounts.ui != null ? ["ui"] : [])
  cas = {
    for k in local.ca_keys : k => {
      path        = k == "node" ? var.mounts.node : k == "client" ? var.mounts.client : var.mounts.ui
      common_name = var.ca_common_names[k]
    }
  }
  client_ca  = var.mode == "split-ca" ? "client" : "node"
  vault_root = var.root_mount != null
  # Which intermediates can be installed now: all of them when Vault signs; with an
  # organisation CA, those whose signed certificate has been handed back.
  signed = {
    for k, ca in local.cas : k => (local.vault_root
      ? vault_pki_secret_backend_root_sign_intermediate.ca[k].certificate
    : var.external_signed_certificates[k]) if local.vault_root || contains(keys(var.external_signed_certificates), k)
  }
}

resource "vault_mount" "ca" {
  for_each                  = local.cas
  path                      = each.value.path
  type                      = "pki"
  description               = "${each.value.common_name} (vaultpki, ${var.mode})"
  max_lease_ttl_seconds     = var.ca_max_lease_ttl_seconds
  default_lease_ttl_seconds = 86400
}

resource "vault_pki_secret_backend_intermediate_cert_request" "ca" {
  for_each    = local.cas
  backend     = vault_mount.ca[each.key].path
  type        = "internal" # the CA key never leaves Vault (and never lands in Terraform state)
  common_name = each.value.common_name
  key_type    = "ec"
  key_bits    = 384
}

resource "vault_pki_secret_backend_root_sign_intermediate" "ca" {
  for_each        = local.vault_root ? local.cas : {}
  backend         = var.root_mount
  issuer_ref      = var.root_issuer_ref
  csr             = vault_pki_secret_backend_intermediate_cert_request.ca[each.key].csr
  common_name     = each.value.common_name
  ttl             = var.intermediate_ttl
  format          = "pem_bundle" # intermediate + root: the mount then knows its whole chain
  max_path_length = 0            # these CAs sign leaves only
}

resource "vault_pki_secret_backend_intermediate_set_signed" "ca" {
  for_each    = local.signed
  backend     = vault_mount.ca[each.key].path
  certificate = each.value
}

resource "vault_pki_secret_backend_issuer" "ca" {
  for_each = local.signed
  backend  = vault_mount.ca[each.key].path
  # The bundle is leaf-first, so the first imported issuer is the intermediate that holds the key.
  issuer_ref              = vault_pki_secret_backend_intermediate_set_signed.ca[each.key].imported_issuers[0]
  issuer_name             = "${each.key}-ca"
  leaf_not_after_behavior = "truncate" # a leaf never outlives its CA
}

resource "vault_pki_secret_backend_config_issuers" "ca" {
  for_each = local.signed
  backend  = vault_mount.ca[each.key].path
  default  = vault_pki_secret_backend_issuer.ca[each.key].issuer_id
}

resource "vault_pki_secret_backend_config_urls" "ca" {
  for_each                = local.cas
  backend                 = vault_mount.ca[each.key].path
  issuing_certificates    = ["${var.aia_base_url}/v1/${each.value.path}/ca"]
  crl_distribution_points = ["${var.aia_base_url}/v1/${each.value.path}/crl"]
  ocsp_servers            = ["${var.aia_base_url}/v1/${each.value.path}/ocsp"] # what CockroachDB's security.ocsp.mode queries
}

resource "vault_pki_secret_backend_crl_config" "ca" {
  for_each     = local.cas
  backend      = vault_mount.ca[each.key].path
  expiry       = "72h"
  disable      = false
  auto_rebuild = true
  enable_delta = true
  ocsp_disable = false
  ocsp_expiry  = "12h"
}

resource "vault_pki_secret_backend_config_auto_tidy" "ca" {
  for_each                              = local.cas
  backend                               = vault_mount.ca[each.key].path
  enabled                               = true
  interval_duration                     = "12h"
  safety_buffer                         = "72h"
  tidy_cert_store                       = true
  tidy_revoked_certs                    = true
  tidy_revoked_cert_issuer_associations = true
  tidy_expired_issuers                  = true
}
