package app

import (
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// ByteSizeVar defines a flag holding a number of bytes, written as a
// Kubernetes quantity as in a Helm value: "1073741824", "500Mi", "2Gi", "1G".
// Negative values are kept for flags where they mean "no limit".
func ByteSizeVar(fs *flag.FlagSet, p *int64, name string, value int64, usage string) {
	*p = value
	fs.Var((*byteSize)(p), name, usage)
}

type byteSize int64

func (b *byteSize) String() string {
	if b == nil {
		return "0"
	}
	return resource.NewQuantity(int64(*b), resource.BinarySI).String()
}

func (b *byteSize) Set(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil || q.MilliValue()%1000 != 0 {
		return fmt.Errorf("%q is not a number of bytes: write an integer, optionally with a unit, such as 500Mi, 2Gi or 1G", s)
	}
	*b = byteSize(q.Value())
	return nil
}
