package anon

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

const draws = 20000

// noiseDraws runs n records with count 1000 through an Anonymizer with the
// given budget and returns the noise added to each.
func noiseDraws(t *testing.T, seed byte, epsilon float64, sensitivity int64, n int) []int64 {
	t.Helper()
	r := Rules{Collection: "c", Purpose: "p", Epsilon: epsilon, Fields: map[string]FieldRule{
		"count": {Kind: Noise, Sensitivity: sensitivity},
	}}
	a := mustNew(t, testSecret, "e", r, WithRandom(rand.NewChaCha8([32]byte{seed})))
	in := make([]map[string]any, n)
	for i := range in {
		in[i] = map[string]any{"count": int64(1000)}
	}
	res := mustApply(t, a, in...)
	if res.Epsilon != epsilon || len(res.Records) != n {
		t.Fatalf("Epsilon %v, %d records", res.Epsilon, len(res.Records))
	}
	out := make([]int64, n)
	for i, rec := range res.Records {
		out[i] = rec["count"].(int64) - 1000
	}
	return out
}

// checkLaplace compares samples with the discrete Laplace of parameter
// a = exp(-epsilon/sensitivity): the mean within 5 standard errors of 0,
// the variance within 5 standard errors of 2a/(1-a)^2, and P(0), P(+-1),
// P(+-2) within 5 standard errors of (1-a)/(1+a) a^|z|. With a fixed seed
// the outcome is fixed; the bounds are what a correct sampler meets with
// overwhelming probability for any seed, and a wrong parameter misses.
func checkLaplace(xs []int64, epsilon float64, sensitivity int64) error {
	a := math.Exp(-epsilon / float64(sensitivity))
	n := float64(len(xs))
	wantVar := variance(epsilon, sensitivity)
	// Fourth moment of the discrete Laplace: E[Z^4] = 2a(1+10a+a^2)/(1-a)^4.
	m4 := 2 * a * (1 + 10*a + a*a) / math.Pow(1-a, 4)

	var sum, sumSq float64
	counts := map[int64]int{}
	for _, x := range xs {
		sum += float64(x)
		sumSq += float64(x) * float64(x)
		counts[x]++
	}
	mean := sum / n
	vr := sumSq/n - mean*mean
	if se := math.Sqrt(wantVar / n); math.Abs(mean) > 5*se {
		return fmt.Errorf("mean %.4f, want 0 +- %.4f", mean, 5*se)
	}
	if se := math.Sqrt((m4 - wantVar*wantVar) / n); math.Abs(vr-wantVar) > 5*se {
		return fmt.Errorf("variance %.4f, want %.4f +- %.4f", vr, wantVar, 5*se)
	}
	for z := int64(-2); z <= 2; z++ {
		p := (1 - a) / (1 + a) * math.Pow(a, math.Abs(float64(z)))
		got := float64(counts[z]) / n
		if se := math.Sqrt(p * (1 - p) / n); math.Abs(got-p) > 5*se {
			return fmt.Errorf("P(%d) = %.4f, want %.4f +- %.4f", z, got, p, 5*se)
		}
	}
	return nil
}

func TestNoiseDistribution(t *testing.T) {
	for _, tc := range []struct {
		epsilon     float64
		sensitivity int64
	}{
		{1, 1},
		{0.5, 1},
		{2, 1},
		{1, 2},    // same law as (0.5, 1)
		{0.1, 10}, // heavy: variance ~ 20,000
	} {
		t.Run(fmt.Sprintf("eps=%v,sens=%d", tc.epsilon, tc.sensitivity), func(t *testing.T) {
			xs := noiseDraws(t, 1, tc.epsilon, tc.sensitivity, draws)
			if err := checkLaplace(xs, tc.epsilon, tc.sensitivity); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The check rejects a sampler with the wrong parameter: draws made with
// epsilon 1 fail against epsilon 0.5 and 1.5.
func TestNoiseCheckCanFail(t *testing.T) {
	xs := noiseDraws(t, 2, 1, 1, draws)
	if err := checkLaplace(xs, 1, 1); err != nil {
		t.Fatalf("correct parameter rejected: %v", err)
	}
	for _, wrong := range []float64{0.8, 1.25} {
		if err := checkLaplace(xs, wrong, 1); err == nil {
			t.Errorf("draws with epsilon 1 pass as epsilon %v", wrong)
		}
	}
	shifted := make([]int64, len(xs))
	for i, x := range xs {
		shifted[i] = x + 1
	}
	if err := checkLaplace(shifted, 1, 1); err == nil {
		t.Error("a biased sampler passes")
	}
}

// Halving epsilon moves the variance as theory says: the ratio of sample
// variances matches 2a/(1-a)^2 at each epsilon within 10%.
func TestNoiseVarianceFollowsEpsilon(t *testing.T) {
	sampleVar := func(xs []int64) float64 {
		var s, s2 float64
		for _, x := range xs {
			s += float64(x)
			s2 += float64(x) * float64(x)
		}
		m := s / float64(len(xs))
		return s2/float64(len(xs)) - m*m
	}
	v1 := sampleVar(noiseDraws(t, 3, 1, 1, draws))
	v05 := sampleVar(noiseDraws(t, 4, 0.5, 1, draws))
	want := variance(0.5, 1) / variance(1, 1) // ~4.25
	if got := v05 / v1; math.Abs(got-want) > 0.1*want {
		t.Fatalf("variance ratio %.3f, want %.3f +- 10%%", got, want)
	}
}

func TestLaplaceParamsExact(t *testing.T) {
	s, tt := laplaceParams(0.5, 3) // 0.5/3 = 1/6
	if s.Int64() != 1 || tt.Int64() != 6 {
		t.Fatalf("s/t = %v/%v, want 1/6", s, tt)
	}
	s, tt = laplaceParams(0.1, 1)
	r := new(big.Rat).SetFrac(s, tt)
	if f, exact := r.Float64(); f != 0.1 || !exact {
		t.Fatalf("s/t = %v, want exactly float64(0.1)", r)
	}
}

// Bernoulli(exp(-g)) for g below and above 1.
func TestBernoulliExp(t *testing.T) {
	smp := sampler{r: rand.NewChaCha8([32]byte{5})}
	for _, g := range []struct{ num, den int64 }{{1, 3}, {1, 1}, {5, 2}} {
		const n = 20000
		hits := 0
		for range n {
			ok, err := smp.bernoulliExp(big.NewInt(g.num), big.NewInt(g.den))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				hits++
			}
		}
		p := math.Exp(-float64(g.num) / float64(g.den))
		if got, se := float64(hits)/n, math.Sqrt(p*(1-p)/n); math.Abs(got-p) > 5*se {
			t.Errorf("exp(-%d/%d): %.4f, want %.4f +- %.4f", g.num, g.den, got, p, 5*se)
		}
	}
}
