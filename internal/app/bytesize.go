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

// CPUs is a number of cores written as a Kubernetes quantity: "2", "1500m", "0.5". Use it
// with flag.TextVar like ByteSize.
type CPUs float64

func (c CPUs) MarshalText() ([]byte, error) {
	return []byte(resource.NewMilliQuantity(int64(c*1000), resource.DecimalSI).String()), nil
}

func (c *CPUs) UnmarshalText(text []byte) error {
	q, err := resource.ParseQuantity(string(text))
	if err != nil || q.Sign() < 0 {
		return fmt.Errorf("%q is not a number of CPUs: write cores or millicores, such as 2, 0.5 or 1500m", text)
	}
	*c = CPUs(float64(q.MilliValue()) / 1000)
	return nil
}
