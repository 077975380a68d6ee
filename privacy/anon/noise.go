package anon

import (
	"fmt"
	"io"
	"math"
	"math/big"
)

// The noise is the discrete Laplace (two-sided geometric) distribution
//
//	P(Z = z) = (1-a)/(1+a) * a^|z|,  a = exp(-epsilon/sensitivity),
//
// mean 0, variance 2a/(1-a)^2. Adding it to an integer count is
// epsilon-differentially private for changes of the count up to
// sensitivity (Ghosh, Roughgarden, Sundararajan 2009).
//
// It is sampled exactly, with integer arithmetic only, by Algorithms 1 and
// 2 of Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential
// Privacy" (NeurIPS 2020): epsilon is a float64, hence exactly a rational
// p/q, and every random decision is a comparison of uniform integers. This
// avoids the floating-point flaws of inverse-CDF samplers (Mironov 2012).

// laplaceParams turns epsilon and sensitivity into the algorithm's s and t:
// the output has P(z) proportional to exp(-|z| * s/t), and s/t =
// epsilon/sensitivity exactly.
func laplaceParams(epsilon float64, sensitivity int64) (s, t *big.Int) {
	r := new(big.Rat).SetFloat64(epsilon)
	r.Quo(r, new(big.Rat).SetInt64(sensitivity))
	return new(big.Int).Set(r.Num()), new(big.Int).Set(r.Denom())
}

// variance is the theoretical variance of the noise, for docs and tests.
func variance(epsilon float64, sensitivity int64) float64 {
	a := math.Exp(-epsilon / float64(sensitivity))
	return 2 * a / ((1 - a) * (1 - a))
}

// sampler draws from r. It is not safe for concurrent use.
type sampler struct {
	r   io.Reader
	buf []byte
}

var bigOne = big.NewInt(1)

// uniform returns a uniform integer in [0, n), n > 0, by rejection.
func (s *sampler) uniform(n *big.Int) (*big.Int, error) {
	bits := new(big.Int).Sub(n, bigOne).BitLen()
	if bits == 0 {
		return new(big.Int), nil
	}
	nb := (bits + 7) / 8
	if cap(s.buf) < nb {
		s.buf = make([]byte, nb)
	}
	b := s.buf[:nb]
	mask := byte(0xff >> (8*nb - bits))
	out := new(big.Int)
	for {
		if _, err := io.ReadFull(s.r, b); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRandom, err)
		}
		b[0] &= mask
		out.SetBytes(b)
		if out.Cmp(n) < 0 {
			return out, nil
		}
	}
}

// bernoulli returns true with probability num/den, 0 <= num <= den.
func (s *sampler) bernoulli(num, den *big.Int) (bool, error) {
	u, err := s.uniform(den)
	if err != nil {
		return false, err
	}
	return u.Cmp(num) < 0, nil
}

// bernoulliExp returns true with probability exp(-num/den), num >= 0
// (CKS Algorithm 1).
func (s *sampler) bernoulliExp(num, den *big.Int) (bool, error) {
	if num.Cmp(den) > 0 {
		whole := new(big.Int).Quo(num, den)
		for i := new(big.Int); i.Cmp(whole) < 0; i.Add(i, bigOne) {
			ok, err := s.bernoulliExpUnit(bigOne, bigOne)
			if err != nil || !ok {
				return false, err
			}
		}
		return s.bernoulliExpUnit(new(big.Int).Mod(num, den), den)
	}
	return s.bernoulliExpUnit(num, den)
}

// bernoulliExpUnit: exp(-g) for g = num/den in [0, 1]. K counts the
// successes of Bernoulli(g/k) for k = 1, 2, ... until the first failure;
// P(K odd) = exp(-g).
func (s *sampler) bernoulliExpUnit(num, den *big.Int) (bool, error) {
	k := int64(1)
	d := new(big.Int)
	for {
		d.Mul(den, big.NewInt(k))
		ok, err := s.bernoulli(num, d)
		if err != nil {
			return false, err
		}
		if !ok {
			break
		}
		k++
	}
	return k%2 == 1, nil
}

// discreteLaplace draws Z with P(Z = z) proportional to exp(-|z| * sNum/tDen)
// (CKS Algorithm 2, scale t/s).
func (s *sampler) discreteLaplace(sNum, tDen *big.Int) (*big.Int, error) {
	for {
		u, err := s.uniform(tDen)
		if err != nil {
			return nil, err
		}
		ok, err := s.bernoulliExp(u, tDen)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		v := new(big.Int)
		for {
			a, err := s.bernoulliExpUnit(bigOne, bigOne)
			if err != nil {
				return nil, err
			}
			if !a {
				break
			}
			v.Add(v, bigOne)
		}
		x := v.Mul(v, tDen)
		x.Add(x, u)         // X = U + t*V: geometric, parameter 1 - exp(-1/t)
		y := x.Quo(x, sNum) // Y = floor(X/s): geometric, parameter 1 - exp(-s/t)
		neg, err := s.bernoulli(bigOne, big.NewInt(2))
		if err != nil {
			return nil, err
		}
		if neg && y.Sign() == 0 {
			continue // so that 0 is not counted twice
		}
		if neg {
			y.Neg(y)
		}
		return y, nil
	}
}

// addNoise returns v + Z, saturating at the int64 range.
func addNoise(v int64, z *big.Int) int64 {
	sum := new(big.Int).Add(big.NewInt(v), z)
	switch {
	case sum.IsInt64():
		return sum.Int64()
	case sum.Sign() < 0:
		return math.MinInt64
	default:
		return math.MaxInt64
	}
}
