terraform {
  required_version = ">= 1.9" # validations that refer to other variables
  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = ">= 5.6, < 6.0"
    }
  }
}
