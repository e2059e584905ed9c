# Split-node layout: the organisation CA will not sign CN=node on a server certificate.
# Its intermediate is signed outside Vault: apply once, sign module.crdb_pki.csrs["node"] with
# the organisation CA, then set signed_node_ca and apply again.
terraform {
  required_providers {
    vault = { source = "hashicorp/vault", version = ">= 5.6, < 6.0" }
  }
}

provider "vault" {}

variable "signed_node_ca" {
  description = "PEM bundle of the signed node intermediate (intermediate first, then the organisation chain)."
  type        = string
  default     = null
}

module "crdb_pki" {
  source                       = "../.."
  mode                         = "split-node"
  aia_base_url                 = "https://vault.internal:8200"
  external_signed_certificates = var.signed_node_ca == null ? {} : { node = var.signed_node_ca }
  nodes = {
    n1 = { hosts = ["n1.db.internal", "10.0.0.1"] }
    n2 = { hosts = ["n2.db.internal", "10.0.0.2"] }
  }
  approle = { token_bound_cidrs = { n1 = ["10.0.0.1/32"], n2 = ["10.0.0.2/32"] } }
}

output "csrs" {
  value = module.crdb_pki.csrs
}
