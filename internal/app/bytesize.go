package app

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// ByteSize is a number of bytes written as a Kubernetes quantity, as in a Helm
// value: "1073741824", "500Mi", "2Gi", "1G". Use it with flag.TextVar:
//
//	flag.TextVar((*app.ByteSize)(&n), "name", app.ByteSize(def), "usage")
//
// Negative values are kept, for flags where they mean "no limit".
type ByteSize int64

func (b ByteSize) MarshalText() ([]byte, error) {
	return []byte(resource.NewQuantity(int64(b), resource.BinarySI).String()), nil
}

func (b *ByteSize) UnmarshalText(text []byte) error {
	q, err := resource.ParseQuantity(string(text))
	if err != nil || q.MilliValue()%1000 != 0 {
		return fmt.Errorf("%q is not a number of bytes: write an integer, optionally with a unit, such as 500Mi, 2Gi or 1G", text)
	}
	*b = ByteSize(q.Value())
	return nil
}
