module github.com/iotfabric/iotfabric

go 1.26
