module crdbtls

go 1.19
